"""Q4_0, Q4_1, Q5_0, Q5_1 on the CPU, over quants.legacy's planes: qs uint8 (N, K/2) (byte j of a block
holds element j low, j + 16 high), d [, m] fp16 (N, K/32), qh int32 (N, K/32) (bit j: element j's 16).

w = d * (code - offset) (+ m): the matvec rounds x to 8 bits per block (`int8.quantize_blocks`,
llama.cpp's q8_1) and adds each block's int32 dot of (code - offset) with it, scaled by d_w * d_x,
and the minimum as m_w * s_x; `expand` writes the rows as fp32 (GEMM path).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, prange

from gguflm.cpu.int8 import offset_sums, q4_0_row, q4_1_row, q5_0_row, q5_1_row, quantize_blocks
from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK


@kernel
def nibble_matvec(qs, d, m, qh, offset, has_min, fifth, x, out):
    """qs (N, nb, 16) uint8, d [m] (N, nb) int16 (fp16 bits), qh (N, nb) int32, x (T, nb, 32) fp32 ->
    out (T, N) fp32: x rounded to 8 bits per block (q8_1), each block's int32 dot of (code - offset)
    with it scaled by d_w * d_x, plus m_w * s_x for the formats with a minimum."""
    n, nb, _ = qs.shape
    xq, xd, xs = quantize_blocks(x)
    xo = offset_sums(xq, int32(offset))
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                if fifth and has_min:
                    out[t, r] = q5_1_row(qs, d, m, qh, r, xq, xd, xs, xo, t)
                elif fifth:
                    out[t, r] = q5_0_row(qs, d, m, qh, r, xq, xd, xs, xo, t)
                elif has_min:
                    out[t, r] = q4_1_row(qs, d, m, qh, r, xq, xd, xs, xo, t)
                else:
                    out[t, r] = q4_0_row(qs, d, m, qh, r, xq, xd, xs, xo, t)


@kernel
def nibble_expand(qs, d, m, qh, offset, has_min, fifth, out):
    """The rows as fp32: out (R, nb, 32) = d * (code - offset) (+ m), as ggml dequantizes them."""
    n, nb, _ = qs.shape
    for r in prange(n):
        for b in range(nb):
            scale = f16_to_f32(d[r, b])
            low = f16_to_f32(m[r, b]) if has_min else float32(0.0)
            h = qh[r, b] if fifth else int32(0)
            for j in range(16):
                lo = int32(qs[r, b, j] & 15) | (((h >> j) & 1) << 4)
                hi = int32(qs[r, b, j] >> 4) | (((h >> (j + 16)) & 1) << 4)
                out[r, b, j] = scale * float32(lo - offset) + low
                out[r, b, j + 16] = scale * float32(hi - offset) + low


def minimum(planes):
    """The block minimum m of a Q4_1/Q5_1 weight, (N, nb) int16 fp16 bits."""
    return planes[2]


def family(has_min: bool, fifth: bool):
    """(planes, matvec, expand) of one format: Q4_0 (no minimum, no fifth bit, codes offset by 8), Q4_1,
    Q5_0 (offset 16), Q5_1. `planes` are its parts as the kernels take them: (qs (N, nb, 16), d, m, qh),
    an (N, 1) zero plane standing in for m or qh where the format has none."""
    offset = 0 if has_min else (16 if fifth else 8)

    def planes(parts):
        qs, d = parts[0], parts[1]
        n, nb = d.shape
        m = parts[2].view(torch.int16).numpy() if has_min else np.zeros((n, 1), np.int16)  # stand-ins: never read
        qh = parts[-1].numpy() if fifth else np.zeros((n, 1), np.int32)
        return qs.numpy().reshape(n, nb, 16), d.view(torch.int16).numpy(), m, qh

    def matvec(planes, x, out) -> None:
        nibble_matvec(*planes, offset, has_min, fifth, x.reshape(x.shape[0], -1, 32), out)

    def expand(planes, out) -> None:
        qs = planes[0]
        nibble_expand(*planes, offset, has_min, fifth, out.numpy().reshape(qs.shape[0], qs.shape[1], 32))

    return planes, matvec, expand
