"""Q4_K on the CPU, over quants.kquants' planes: qs uint8 (N, K/2) (byte 32j + l of a superblock: low
nibble weight 64j + l, high nibble 64j + 32 + l), scales uint8 (N, 12K/256) (8 six-bit scales and mins
per superblock), dm fp16 (N, 2K/256) (d, dmin pairs).

w = (d * sc) * q - (dmin * m) per 32-weight sub-block, the products rounded as ggml rounds them: the
matvec sums (d * sc) * (q * x) in 32 lanes per row and the minimum once per sub-block as
(dmin * m) * sum(x_sub); `expand` writes the rows as fp32 (GEMM path).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK, lane_sum


@njit(inline="always", boundscheck=False)
def scale_min(b, i):
    """Sub-block i's six-bit scale and min from a superblock's 12 scale bytes `b` (ggml's get_scale_min_k4)."""
    if i < 4:
        return int32(b[i] & 63), int32(b[i + 4] & 63)
    return int32((b[i + 4] & 15) | ((b[i - 4] >> 6) << 4)), int32((b[i + 4] >> 4) | ((b[i] >> 6) << 4))


@kernel
def q4_k_matvec(qs, scales, dm, x, xsum, out):
    """qs (N, S, 4, 32) uint8, scales (N, S, 12) uint8, dm (N, S, 2) int16 (fp16 bits), x (T, S, 8, 32)
    fp32, xsum (T, S, 8) fp32 (each sub-block's sum of x) -> out (T, N) fp32."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for s in range(n_sb):
                    d, dmin = f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1])
                    for j in range(4):
                        sc_lo, m_lo = scale_min(scales[r, s], 2 * j)
                        sc_hi, m_hi = scale_min(scales[r, s], 2 * j + 1)
                        a_lo, a_hi = d * float32(sc_lo), d * float32(sc_hi)
                        for l in range(32):
                            q = qs[r, s, j, l]
                            acc[l] += a_lo * (float32(q & 15) * x[t, s, 2 * j, l])
                            acc[l] += a_hi * (float32(q >> 4) * x[t, s, 2 * j + 1, l])
                        low += (dmin * float32(m_lo)) * xsum[t, s, 2 * j]
                        low += (dmin * float32(m_hi)) * xsum[t, s, 2 * j + 1]
                out[t, r] = lane_sum(acc) - low


@kernel
def q4_k_expand(qs, scales, dm, out):
    """The rows as fp32: out (R, S, 8, 32) = (d * sc) * q - (dmin * m), as ggml dequantizes them."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            d, dmin = f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1])
            for i in range(8):
                sc, m = scale_min(scales[r, s], i)
                a, b = d * float32(sc), dmin * float32(m)
                shift = 4 * (i % 2)
                for l in range(32):
                    out[r, s, i, l] = a * float32((qs[r, s, i // 2, l] >> shift) & 15) - b


def _planes(parts):
    qs, scales, dm = parts
    n, n_sb = qs.shape[0], qs.shape[1] // 128
    return (qs.numpy().reshape(n, n_sb, 4, 32), scales.numpy().reshape(n, n_sb, 12),
            dm.view(torch.int16).numpy().reshape(n, n_sb, 2))


def matvec(parts, x, out) -> None:
    qs, scales, dm = _planes(parts)
    xs = x.view(x.shape[0], qs.shape[1], 8, 32)
    q4_k_matvec(qs, scales, dm, xs.numpy(), xs.sum(-1).numpy(), out.numpy())


def expand(parts, out) -> None:
    qs, scales, dm = _planes(parts)
    q4_k_expand(qs, scales, dm, out.numpy().reshape(qs.shape[0], qs.shape[1], 8, 32))
