"""Q8_0 on the CPU: w = d * q per 32-weight block; qs int8 (N, K), d fp16 (N, K/32) (quants.legacy).

`matvec` rounds x to 8 bits per block (`int8.quantize_blocks`, llama.cpp's q8_0) and reads the weight
blocks where they lie (`int8.q8_0_row`: each block's int32 dot with x, scaled by d_w * d_x).
`expand` writes rows as fp32 for the GEMM path (prefill).
"""

from __future__ import annotations

import numpy as np
from numba import float32, prange

from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.int8 import q8_0_row, quantize_blocks
from gguflm.cpu.lanes import ROWS_PER_TASK


@kernel
def q8_0_matvec(qs, d, x, out):
    """qs (N, nb, 32) int8, d (N, nb) int16 (fp16 bits), x (T, nb, 32) fp32 -> out (T, N) fp32."""
    n, nb, _ = qs.shape
    xq, xd, _ = quantize_blocks(x)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = q8_0_row(qs, d, r, xq, xd, t)


@kernel
def q8_0_expand(qs, d, out):
    """qs (R, nb, 32) int8, d (R, nb) int16 (fp16 bits) -> out (R, nb, 32) fp32 = d * q."""
    n, nb, _ = qs.shape
    for r in prange(n):
        for b in range(nb):
            scale = f16_to_f32(d[r, b])
            for j in range(32):
                out[r, b, j] = scale * float32(qs[r, b, j])


def planes(parts):
    """(qs (N, nb, 32) int8, d (N, nb) int16) as numpy arrays."""
    qs, d = parts
    n, k = qs.shape
    return qs.numpy().reshape(n, k // 32, 32), d.numpy().view(np.int16)


def matvec(planes, x, out) -> None:
    q8_0_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def expand(planes, out) -> None:
    qs, d = planes
    q8_0_expand(qs, d, out.numpy().reshape(qs.shape))
