"""IQ4_NL and IQ4_XS on the CPU: 4-bit indices into ggml's 16 non-linear levels (quants.iq4_nl.KVALUES).

IQ4_NL, over quants.iq4_nl's planes (Q4_0's layout): qs uint8 (N, K/2) (byte j of a block holds element
j low, j + 16 high), d fp16 (N, K/32); w = d * level. IQ4_XS, over quants.kquants' planes: qs uint8
(N, K/2) (byte 16i + j of a superblock: low nibble weight 32i + j, high nibble 32i + 16 + j), scales_l
uint8 (N, 4K/256), scales_h int16 (N, K/256), d fp16 (N, K/256); w = (d * (ls - 32)) * level over
32-weight sub-blocks. The matvec rounds x to 8 bits per 32 values and takes integer dots of the levels
(signed int8, looked up by `vpshufb`: `int8.iq4_nl_row`, `int8_k.iq4_xs_row`); `expand` writes the rows
as fp32 (GEMM path, which multiplies the same rounded x), bit for bit the reference's (each weight is
one exact product).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.int8 import iq4_nl_row, quantize_blocks
from gguflm.cpu.int8_k import iq4_xs_row
from gguflm.cpu.jit import f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK
from gguflm.quants.iq4_nl import KVALUES


def _code_polynomial() -> tuple[np.float32, ...]:
    """Coefficients (highest first) of a quartic in the code itself that is within 0.48 of every level,
    so rounding it gives the level exactly, checked here in float32 with each step rounded and fused
    (the kernels contract Horner's steps into FMAs)."""
    codes = np.arange(16, dtype=np.float64)
    coeffs = np.polyfit(codes, np.array(KVALUES, dtype=np.float64), 4).astype(np.float32)
    for fused in (False, True):
        value = np.zeros(16, dtype=np.float32)
        for c in coeffs:  # a fused step is exact in float64, then rounded once
            value = (value.astype(np.float64) * codes + c).astype(np.float32) if fused else value * codes.astype(np.float32) + c
        if not np.array_equal(np.rint(value), np.array(KVALUES, dtype=np.float32)):
            raise RuntimeError("the IQ4 level polynomial does not round to the table")
    return tuple(coeffs)


C4, C3, C2, C1, C0 = _code_polynomial()


@njit(inline="always", boundscheck=False)
def level(code):
    """The level of a 4-bit code, as a quartic in the code rounded: four FMAs and a round, which LLVM
    vectorizes; a load from the 16-entry table it leaves scalar (`expand`; the matvecs look levels up as
    int8 vectors instead). IQ4_XS matvec, then in fp32 lanes, one thread, 4096x4096,
    the shared 2-core box at load 1.2-1.4, best of 80 interleaved: the table 1.76 G weights/s, the
    quartic in code - 7.5 (the reference's) 2.16, this one 2.37; for IQ4_NL the three were within the
    machine's noise (2.2-3.3)."""
    c = float32(code)
    return np.rint((((C4 * c + C3) * c + C2) * c + C1) * c + C0)


@kernel
def iq4_nl_matvec(qs, d, x, out):
    """qs (N, nb, 16) uint8, d (N, nb) int16 (fp16 bits), x (T, nb, 32) fp32 -> out (T, N) fp32: x rounded
    to 8 bits per block, each row's dot by `int8.iq4_nl_row`."""
    n = qs.shape[0]
    xq, xd, _ = quantize_blocks(x)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = iq4_nl_row(qs, d, r, xq, xd, t)


@kernel
def iq4_nl_expand(qs, d, out):
    """The rows as fp32: out (R, nb, 32) = d * level."""
    n, nb, _ = qs.shape
    for r in prange(n):
        for b in range(nb):
            scale = f16_to_f32(d[r, b])
            for j in range(16):
                out[r, b, j] = level(int32(qs[r, b, j]) & 15) * scale
                out[r, b, j + 16] = level(int32(qs[r, b, j]) >> 4) * scale


def nl_planes(parts):
    """(qs (N, B, 16) uint8, d (N, B) int16) as numpy arrays."""
    qs, d = parts
    n, nb = d.shape
    return qs.numpy().reshape(n, nb, 16), d.view(torch.int16).numpy()


def nl_matvec(planes, x, out) -> None:
    iq4_nl_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def nl_expand(planes, out) -> None:
    qs, d = planes
    iq4_nl_expand(qs, d, out.numpy().reshape(qs.shape[0], qs.shape[1], 32))


@njit(inline="always", boundscheck=False)
def xs_scale(scales_l, scales_h, i):
    """Sub-block i's ls - 32: the low four bits are nibble i % 2 of scales_l[i // 2], the high two bits 2i
    of scales_h."""
    low = (int32(scales_l[i // 2]) >> (4 * (i % 2))) & 15
    return (low | (((int32(scales_h) >> (2 * i)) & 3) << 4)) - 32


@kernel
def iq4_xs_matvec(qs, scales_l, scales_h, d, x, out):
    """qs (N, S, 8, 16) uint8, scales_l (N, S, 4) uint8, scales_h (N, S) int16, d (N, S) int16 (fp16 bits),
    x (T, 8S, 32) fp32 -> out (T, N) fp32: x rounded to 8 bits per 32 values, each row's dot by
    `int8_k.iq4_xs_row`."""
    n = qs.shape[0]
    xq, xd, _ = quantize_blocks(x)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                out[t, r] = iq4_xs_row(qs, scales_l, scales_h, d, r, xq, xd, t)


@kernel
def iq4_xs_expand(qs, scales_l, scales_h, d, out):
    """The rows as fp32: out (R, S, 8, 32) = level * (d * (ls - 32))."""
    n, n_sb = qs.shape[0], qs.shape[1]
    for r in prange(n):
        for s in range(n_sb):
            dd = f16_to_f32(d[r, s])
            for i in range(8):
                a = dd * float32(xs_scale(scales_l[r, s], scales_h[r, s], i))
                for j in range(16):
                    out[r, s, i, j] = level(int32(qs[r, s, i, j]) & 15) * a
                    out[r, s, i, j + 16] = level(int32(qs[r, s, i, j]) >> 4) * a


def xs_planes(parts):
    """(qs (N, S, 8, 16), scales_l (N, S, 4), scales_h (N, S) uint8, d (N, S) int16) as numpy arrays."""
    qs, scales_l, scales_h, d = parts
    n, n_sb = d.shape
    return (qs.numpy().reshape(n, n_sb, 8, 16), scales_l.numpy().reshape(n, n_sb, 4), scales_h.numpy(),
            d.view(torch.int16).numpy())


def xs_matvec(planes, x, out) -> None:
    iq4_xs_matvec(*planes, x.reshape(x.shape[0], -1, 32), out)


def xs_expand(planes, out) -> None:
    qs, scales_l, scales_h, d = planes
    iq4_xs_expand(qs, scales_l, scales_h, d, out.numpy().reshape(qs.shape[0], qs.shape[1], 8, 32))
