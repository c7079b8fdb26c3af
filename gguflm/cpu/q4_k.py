"""Q4_K and Q5_K on the CPU, over quants.kquants' planes: qs uint8 (N, K/2) (byte 32j + l of a superblock:
low nibble weight 64j + l, high nibble 64j + 32 + l), Q5_K's qh uint8 (N, K/8) (bit i of byte l: weight
32i + l's 16), scales uint8 (N, 12K/256) (8 six-bit scales and mins per superblock), dm fp16 (N, 2K/256)
(d, dmin pairs).

w = (d * sc) * q - (dmin * m) per 32-weight sub-block: the matvec rounds x to 8 bits per 32 values and
takes integer block dots (`int8_k.q4_k_row`); `expand` writes the rows as fp32, rounded as ggml
rounds them (GEMM path, which multiplies the same rounded x).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.int8 import block_totals, quantize_blocks
from gguflm.cpu.int8_k import q4_k_row, q5_k_row
from gguflm.cpu.jit import bits_f32, f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK

NO_QH = np.zeros((1, 1, 32), np.uint8)  # Q4_K's stand-in for Q5_K's qh plane


@njit(inline="always", boundscheck=False)
def scale_min(b, i):
    """Sub-block i's six-bit scale and min from a superblock's 12 scale bytes `b` (ggml's get_scale_min_k4)."""
    if i < 4:
        return int32(b[i] & 63), int32(b[i + 4] & 63)
    return int32((b[i + 4] & 15) | ((b[i - 4] >> 6) << 4)), int32((b[i + 4] >> 4) | ((b[i] >> 6) << 4))


@kernel
def k4_matvec(qs, qh, scales, dm, fifth, x, out):
    """qs (N, S, 4, 32) uint8, qh (N, S, 32) uint8 (Q5_K; NO_QH for Q4_K), scales (N, S, 12) uint8,
    dm (N, S, 2) int16 (fp16 bits), x (T, 8S, 32) fp32 -> out (T, N) fp32: x rounded to 8 bits per
    32 values (`quantize_blocks`), each row's dot by `q4_k_row` / `q5_k_row`."""
    n = qs.shape[0]
    xq, xd, _ = quantize_blocks(x)
    xt = block_totals(xq, xd, 32)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                if fifth:
                    out[t, r] = q5_k_row(qs, qh, scales, dm, r, xq, xd, xt, t)
                else:
                    out[t, r] = q4_k_row(qs, qh, scales, dm, r, xq, xd, xt, t)


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


def matvec(planes, x, out) -> None:
    qs, scales, dm = planes[0], planes[-2], planes[-1]
    fifth = len(planes) == 4
    k4_matvec(qs, planes[1] if fifth else NO_QH, scales, dm, fifth, x.reshape(x.shape[0], -1, 32), out)


def expand(planes, out) -> None:
    qs, scales, dm = planes[0], planes[-2], planes[-1]
    fifth = len(planes) == 4
    k4_expand(qs, planes[1] if fifth else NO_QH, scales, dm, fifth, out.numpy().reshape(qs.shape[0], qs.shape[1], 8, 32))
