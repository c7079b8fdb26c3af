"""Q2_K on the CPU, over quants.kquants' planes: qs uint8 (N, K/4) (weight 128h + 32t + l of a superblock
is bits 2t of byte 32h + l), scales uint8 (N, K/16) (scale | min << 4 per 16-weight sub-block), dm fp16
(N, 2K/256) (d, dmin pairs).

w = (d * sc) * q - (dmin * m) per 16-weight sub-block: the matvec rounds x to 8 bits per 32 values and
takes integer dots (`int8_k.q2_k_row`, the minimum as (dmin * m) times each 16's sum of the rounded x);
`expand` writes the rows as fp32, rounded as ggml rounds them (GEMM path, which multiplies the same
rounded x).
"""

from __future__ import annotations

import torch
from numba import float32, int32, prange

from gguflm.cpu.int8 import block_totals, quantize_blocks
from gguflm.cpu.int8_k import q2_k_row
from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK


@kernel
def q2_k_matvec(qs, scales, dm, x, out):
    """qs (N, S, 2, 32) uint8, scales (N, S, 16) uint8, dm (N, S, 2) int16 (fp16 bits), x (T, 8S, 32) fp32
    -> out (T, N) fp32: x rounded to 8 bits per 32 values, each row's dot by `q2_k_row`."""
    n = qs.shape[0]
    xq, xd, _ = quantize_blocks(x)
    xt = block_totals(xq, xd, 16)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = q2_k_row(qs, scales, dm, r, xq, xd, xt, t)


@kernel
def q2_k_expand(qs, scales, dm, out):
    """The rows as fp32: out (R, S, 2, 4, 32) = (d * sc) * q - (dmin * m), as ggml dequantizes them."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            d, dmin = f16_to_f32(dm[r, s, 0]), f16_to_f32(dm[r, s, 1])
            for h in range(2):
                for j in range(4):
                    lo, hi = scales[r, s, 8 * h + 2 * j], scales[r, s, 8 * h + 2 * j + 1]
                    a_lo, b_lo = d * float32(lo & 15), dmin * float32(lo >> 4)
                    a_hi, b_hi = d * float32(hi & 15), dmin * float32(hi >> 4)
                    for l in range(32):
                        q = (int32(qs[r, s, h, l]) >> (2 * j)) & 3
                        out[r, s, h, j, l] = (a_lo if l < 16 else a_hi) * float32(q) - (b_lo if l < 16 else b_hi)

def planes(parts):
    """(qs (N, S, 2, 32), scales (N, S, 16) uint8, dm (N, S, 2) int16) as numpy arrays."""
    qs, scales, dm = parts
    n, n_sb = qs.shape[0], qs.shape[1] // 64
    return (qs.numpy().reshape(n, n_sb, 2, 32), scales.numpy().reshape(n, n_sb, 16),
            dm.view(torch.int16).numpy().reshape(n, n_sb, 2))


def matvec(planes, x, out) -> None:
    q2_k_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def expand(planes, out) -> None:
    qs, scales, dm = planes
    q2_k_expand(qs, scales, dm, out.numpy().reshape(qs.shape[0], qs.shape[1], 2, 4, 32))
