"""Q4_0, Q4_1, Q5_0, Q5_1 on the CPU, over quants.legacy's planes: qs uint8 (N, K/2) (byte j of a block
holds element j low, j + 16 high), d [, m] fp16 (N, K/32), qh int32 (N, K/32) (bit j: element j's 16).

w = d * (code - offset) (+ m): the matvec sums d * ((code - offset) * x) in 32 lanes per row and the
minimum once per block as m * sum(x_block); `expand` writes the rows as fp32 (GEMM path).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, prange

from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK, lane_sum

NO_PLANE = np.zeros((1, 1), np.int32)  # stands for the plane a format does not have (m, qh)


@kernel
def nibble_matvec(qs, d, m, qh, x, xsum, offset, has_min, fifth, out):
    """qs (N, nb, 16) uint8, d and m (N, nb) int16 (fp16 bits), qh (N, nb) int32, x (T, nb, 32) fp32,
    xsum (T, nb) fp32 (each block's sum of x) -> out (T, N) fp32."""
    n, nb, _ = qs.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for b in range(nb):
                    scale = f16_to_f32(d[r, b])
                    h = qh[r, b] if fifth else int32(0)
                    for j in range(16):
                        lo = int32(qs[r, b, j] & 15) | (((h >> j) & 1) << 4)
                        hi = int32(qs[r, b, j] >> 4) | (((h >> (j + 16)) & 1) << 4)
                        acc[j] += scale * (float32(lo - offset) * x[t, b, j])
                        acc[j + 16] += scale * (float32(hi - offset) * x[t, b, j + 16])
                    if has_min:
                        low += f16_to_f32(m[r, b]) * xsum[t, b]
                out[t, r] = lane_sum(acc) + low


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


def _planes(parts, has_min: bool, fifth: bool):
    """(qs (N, nb, 16), d, m, qh) as numpy arrays, NO_PLANE for the planes the format lacks."""
    qs, d = parts[0], parts[1]
    n, nb = d.shape
    m = parts[2].view(torch.int16).numpy() if has_min else NO_PLANE.view(np.int16)
    qh = parts[-1].numpy() if fifth else NO_PLANE
    return qs.numpy().reshape(n, nb, 16), d.view(torch.int16).numpy(), m, qh


def family(has_min: bool, fifth: bool):
    """(matvec, expand) of one format: Q4_0 (no minimum, no fifth bit, codes offset by 8), Q4_1,
    Q5_0 (offset 16), Q5_1."""
    offset = 0 if has_min else (16 if fifth else 8)

    def matvec(parts, x, out) -> None:
        qs, d, m, qh = _planes(parts, has_min, fifth)
        xb = x.view(x.shape[0], d.shape[1], 32)
        nibble_matvec(qs, d, m, qh, xb.numpy(), xb.sum(-1).numpy(), offset, has_min, fifth, out.numpy())

    def expand(parts, out) -> None:
        qs, d, m, qh = _planes(parts, has_min, fifth)
        nibble_expand(qs, d, m, qh, offset, has_min, fifth, out.numpy().reshape(qs.shape[0], qs.shape[1], 32))

    return matvec, expand
