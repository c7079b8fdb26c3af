"""Q6_K on the CPU, over quants.kquants' planes: ql uint8 (N, K/2), qh uint8 (N, K/4), scales int8
(N, K/16), d fp16 (N, K/256). In a superblock, weight 128h + 32g + l (h < 2, g < 4, l < 32) is nibble
g // 2 of ql[64h + 32 (g % 2) + l] with bits 2g, 2g + 1 of qh[32h + l] above it; its sub-block of 16
is 8h + 2g + l // 16.

w = (d * sc) * (q - 32): the matvec rounds x to 8 bits per 32 values and takes integer dots of each
16-weight sub-block (`int8_k.q6_k_row`); `expand` writes the rows as fp32 (GEMM path, which multiplies
the same rounded x).
"""

from __future__ import annotations

import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.int8 import offset_sums, quantize_blocks
from gguflm.cpu.int8_k import q6_k_row
from gguflm.cpu.jit import bits_f32, f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK


@njit(inline="always", boundscheck=False)
def code(ql, qh, h, g, l):
    """q - 32 of weight 128h + 32g + l of a superblock (ql (2, 64), qh (2, 32)), as fp32 (exact)."""
    return (bits_f32(ql[h, 32 * (g % 2) + l], 4 * (g // 2), 15) + float32(16.0) * bits_f32(qh[h, l], 2 * g, 3)
            - float32(32.0))


@kernel
def q6_k_matvec(ql, qh, scales, d, x, out):
    """ql (N, S, 2, 64) uint8, qh (N, S, 2, 32) uint8, scales (N, S, 16) int8, d (N, S) int16 (fp16 bits),
    x (T, 8S, 32) fp32 -> out (T, N) fp32: x rounded to 8 bits per 32 values, each row's dot by `q6_k_row`."""
    n = ql.shape[0]
    xq, xd, _ = quantize_blocks(x)
    xo = offset_sums(xq, int32(32))
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = q6_k_row(ql, qh, scales, d, r, xq, xd, xo, t)


@kernel
def q6_k_expand(ql, qh, scales, d, out):
    """The rows as fp32: out (R, S, 8, 32) = (d * sc) * (q - 32), as ggml dequantizes them."""
    n, n_sb = ql.shape[0], ql.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            scale = f16_to_f32(d[r, s])
            for h in range(2):
                for g in range(4):
                    for l in range(32):
                        a = scale * float32(scales[r, s, 8 * h + 2 * g + l // 16])
                        out[r, s, 4 * h + g, l] = a * code(ql[r, s], qh[r, s], h, g, l)


def planes(parts):
    """(ql (N, S, 2, 64), qh (N, S, 2, 32), scales (N, S, 16) int8, d (N, S) int16) as numpy arrays."""
    ql, qh, scales, d = parts
    n, n_sb = ql.shape[0], ql.shape[1] // 128
    return (ql.numpy().reshape(n, n_sb, 2, 64), qh.numpy().reshape(n, n_sb, 2, 32),
            scales.numpy().reshape(n, n_sb, 16), d.view(torch.int16).numpy().reshape(n, n_sb))


def matvec(planes, x, out) -> None:
    q6_k_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def expand(planes, out) -> None:
    ql = planes[0]
    q6_k_expand(*planes, out.numpy().reshape(ql.shape[0], ql.shape[1], 8, 32))
