"""Q3_K on the CPU, over quants.kquants' planes: qs uint8 (N, K/4) (the two low bits, laid out as Q2_K's:
weight 128h + 32t + l is bits 2t of byte 32h + l), hmask uint8 (N, K/8) (its third bit: bit 4h + t of
byte l), scales uint8 (N, 12K/256) (16 six-bit scales), d fp16 (N, K/256).

w = (d * (sc - 32)) * (q2 + 4 * hbit - 4) per 16-weight sub-block: the matvec rounds x to 8 bits per 32
values and takes integer dots (`int8_k.q3_k_row`, the 4 taken away as x's own sums); `expand` writes
the rows as fp32, rounded as ggml rounds them (GEMM path, which multiplies the same rounded x).
"""

from __future__ import annotations

import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.int8 import offset_sums, quantize_blocks
from gguflm.cpu.int8_k import q3_k_row
from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK


@njit(inline="always", boundscheck=False)
def scale(b, i):
    """Sub-block i's scale minus 32 from a superblock's 12 scale bytes `b`: the low four bits are nibble
    i // 8 of b[i % 8], the high two bits 2 * (i // 4) of b[8 + i % 4]."""
    low = (int32(b[i % 8]) >> (4 * (i // 8))) & 15
    high = (int32(b[8 + i % 4]) >> (2 * (i // 4))) & 3
    return (low | (high << 4)) - 32


@kernel
def q3_k_matvec(qs, hmask, scales, d, x, out):
    """qs (N, S, 2, 32) uint8, hmask (N, S, 32) uint8, scales (N, S, 12) uint8, d (N, S) int16 (fp16 bits),
    x (T, 8S, 32) fp32 -> out (T, N) fp32: x rounded to 8 bits per 32 values, each row's dot by `q3_k_row`."""
    n = qs.shape[0]
    xq, xd, _ = quantize_blocks(x)
    xo = offset_sums(xq, int32(4))
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = q3_k_row(qs, hmask, scales, d, r, xq, xd, xo, t)


@kernel
def q3_k_expand(qs, hmask, scales, d, out):
    """The rows as fp32: out (R, S, 2, 4, 32) = (d * (sc - 32)) * q, as ggml dequantizes them."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            dd = f16_to_f32(d[r, s])
            for h in range(2):
                for j in range(4):
                    a_lo = dd * float32(scale(scales[r, s], 8 * h + 2 * j))
                    a_hi = dd * float32(scale(scales[r, s], 8 * h + 2 * j + 1))
                    for l in range(32):
                        q = ((int32(qs[r, s, h, l]) >> (2 * j)) & 3) - 4
                        q += ((int32(hmask[r, s, l]) >> (4 * h + j)) & 1) << 2
                        out[r, s, h, j, l] = (a_lo if l < 16 else a_hi) * float32(q)


def planes(parts):
    """(qs (N, S, 2, 32), hmask (N, S, 32), scales (N, S, 12) uint8, d (N, S) int16) as numpy arrays."""
    qs, hmask, scales, d = parts
    n, n_sb = qs.shape[0], qs.shape[1] // 64
    return (qs.numpy().reshape(n, n_sb, 2, 32), hmask.numpy().reshape(n, n_sb, 32),
            scales.numpy().reshape(n, n_sb, 12), d.view(torch.int16).numpy().reshape(n, n_sb))


def matvec(planes, x, out) -> None:
    q3_k_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def expand(planes, out) -> None:
    qs, hmask, scales, d = planes
    q3_k_expand(qs, hmask, scales, d, out.numpy().reshape(qs.shape[0], qs.shape[1], 2, 4, 32))
