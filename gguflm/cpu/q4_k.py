"""Q4_K and Q5_K on the CPU, over quants.kquants' planes: qs uint8 (N, K/2) (byte 32j + l of a superblock:
low nibble weight 64j + l, high nibble 64j + 32 + l), Q5_K's qh uint8 (N, K/8) (bit i of byte l: weight
32i + l's 16), scales uint8 (N, 12K/256) (8 six-bit scales and mins per superblock), dm fp16 (N, 2K/256)
(d, dmin pairs).

w = (d * sc) * q - (dmin * m) per 32-weight sub-block, the products rounded as ggml rounds them: the
matvec sums (d * sc) * (q * x) in 32 lanes per row and the minimum once per sub-block as
(dmin * m) * sum(x_sub) (the sub-block sums of x made once per call, inside the kernel); `expand`
writes the rows as fp32 (GEMM path). The two formats share one superblock body (`add_superblock`).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.jit import bits_f32, f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK, block_sums, lane_sum

NO_QH = np.zeros((1, 1, 32), np.uint8)  # Q4_K's stand-in for Q5_K's qh plane


@njit(inline="always", boundscheck=False)
def scale_min(b, i):
    """Sub-block i's six-bit scale and min from a superblock's 12 scale bytes `b` (ggml's get_scale_min_k4)."""
    if i < 4:
        return int32(b[i] & 63), int32(b[i + 4] & 63)
    return int32((b[i + 4] & 15) | ((b[i - 4] >> 6) << 4)), int32((b[i + 4] >> 4) | ((b[i] >> 6) << 4))


@njit(inline="always", boundscheck=False)
def add_superblock(acc, q, qh, sc, x, xsum, d, dmin, fifth):
    """acc[l] += (d * sc_i) * (code * x) over one superblock (q (4, 32) nibble bytes, qh (32,) fifth bits
    when `fifth`, sc its 12 scale bytes, x (8, 32), xsum (8,) the sub-blocks' sums of x); returns the
    minimum's part, the sum over sub-blocks of (dmin * m_i) * xsum_i."""
    low = float32(0.0)
    for j in range(4):
        sc_lo, m_lo = scale_min(sc, 2 * j)
        sc_hi, m_hi = scale_min(sc, 2 * j + 1)
        a_lo, a_hi = d * float32(sc_lo), d * float32(sc_hi)
        for l in range(32):
            lo = bits_f32(q[j, l], 0, 15)
            hi = bits_f32(q[j, l], 4, 15)
            if fifth:
                lo += float32(16.0) * bits_f32(qh[l], 2 * j, 1)
                hi += float32(16.0) * bits_f32(qh[l], 2 * j + 1, 1)
            acc[l] += a_lo * (lo * x[2 * j, l])
            acc[l] += a_hi * (hi * x[2 * j + 1, l])
        low += (dmin * float32(m_lo)) * xsum[2 * j]
        low += (dmin * float32(m_hi)) * xsum[2 * j + 1]
    return low


@kernel
def q4_k_matvec(qs, scales, dm, x, out):
    """qs (N, S, 4, 32) uint8, scales (N, S, 12) uint8, dm (N, S, 2) int16 (fp16 bits), x (T, S, 8, 32)
    fp32 -> out (T, N) fp32."""
    n, n_sb = qs.shape[0], qs.shape[1]
    xsum = block_sums(x.reshape((x.shape[0], n_sb * 8, 32))).reshape((x.shape[0], n_sb, 8))
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for s in range(n_sb):
                    low += add_superblock(acc, qs[r, s], NO_QH[0, 0], scales[r, s], x[t, s], xsum[t, s],
                                          f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1]), False)
                out[t, r] = lane_sum(acc) - low


@kernel
def q5_k_matvec(qs, qh, scales, dm, x, out):
    """As q4_k_matvec, with qh (N, S, 32) uint8 (the fifth bits)."""
    n, n_sb = qs.shape[0], qs.shape[1]
    xsum = block_sums(x.reshape((x.shape[0], n_sb * 8, 32))).reshape((x.shape[0], n_sb, 8))
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for s in range(n_sb):
                    low += add_superblock(acc, qs[r, s], qh[r, s], scales[r, s], x[t, s], xsum[t, s],
                                          f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1]), True)
                out[t, r] = lane_sum(acc) - low


@kernel
def k4_expand(qs, qh, scales, dm, fifth, out):
    """The rows as fp32: out (R, S, 8, 32) = (d * sc) * q - (dmin * m), as ggml dequantizes them."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            d, dmin = f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1])
            for i in range(8):
                sc, m = scale_min(scales[r, s], i)
                a, b = d * float32(sc), dmin * float32(m)
                for l in range(32):
                    q = bits_f32(qs[r, s, i // 2, l], 4 * (i % 2), 15)
                    if fifth:
                        q += float32(16.0) * bits_f32(qh[r, s, l], i, 1)
                    out[r, s, i, l] = a * q - b


def planes(parts):
    """Q4_K: (qs (N, S, 4, 32), scales (N, S, 12), dm (N, S, 2) int16); Q5_K: qh (N, S, 32) after qs."""
    qs, scales, dm = parts[0], parts[-2], parts[-1]
    n, n_sb = qs.shape[0], qs.shape[1] // 128
    qh = (parts[1].numpy().reshape(n, n_sb, 32),) if len(parts) == 4 else ()
    return (qs.numpy().reshape(n, n_sb, 4, 32), *qh, scales.numpy().reshape(n, n_sb, 12),
            dm.view(torch.int16).numpy().reshape(n, n_sb, 2))


def _x(planes, x):
    return x.numpy().reshape(x.shape[0], planes[0].shape[1], 8, 32)


def q4_k(planes, x, out) -> None:
    q4_k_matvec(*planes, _x(planes, x), out.numpy())


def q5_k(planes, x, out) -> None:
    q5_k_matvec(*planes, _x(planes, x), out.numpy())


def expand(planes, out) -> None:
    qs, scales, dm = planes[0], planes[-2], planes[-1]
    fifth = len(planes) == 4
    k4_expand(qs, planes[1] if fifth else NO_QH, scales, dm, fifth, out.numpy().reshape(qs.shape[0], qs.shape[1], 8, 32))
