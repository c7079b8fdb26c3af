"""Q4_0, Q4_1, Q5_0, Q5_1 on the CPU, over quants.legacy's planes: qs uint8 (N, K/2) (byte j of a block
holds element j low, j + 16 high), d [, m] fp16 (N, K/32), qh int32 (N, K/32) (bit j: element j's 16).

w = d * (code - offset) (+ m): the matvec sums d * ((code - offset) * x) in 32 lanes per row and the
minimum once per block as m * sum(x_block) (the block sums of x made once per call, inside the
kernel); `expand` writes the rows as fp32 (GEMM path). One kernel per format, so the planes a format
lacks cost nothing in its loop; the codes are unpacked on 32-bit integers (`bits_f32`), which LLVM
vectorizes (numba's int64 arithmetic it left scalar).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float32, int32, njit, prange

from gguflm.cpu.jit import bits_f32, f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK, block_sums, lane_sum

NO_PLANE = np.zeros((1, 1), np.int32)  # stands for the plane a format does not have (m, qh)


@njit(inline="always", boundscheck=False)
def add_block(acc, q, h, x, scale, offset, fifth):
    """acc[j] += scale * ((code_j - offset) * x[j]) over one block: q its 16 nibble bytes, h its fifth
    bits (when `fifth`), x its 32 values. Every step is exact up to the two float roundings."""
    for j in range(16):
        lo = bits_f32(q[j], 0, 15)
        hi = bits_f32(q[j], 4, 15)
        if fifth:
            lo += float32(16.0) * bits_f32(h, j, 1)
            hi += float32(16.0) * bits_f32(h, j + 16, 1)
        acc[j] += scale * ((lo - offset) * x[j])
        acc[j + 16] += scale * ((hi - offset) * x[j + 16])


@kernel
def q4_0_matvec(qs, d, x, out):
    """qs (N, nb, 16) uint8, d (N, nb) int16 (fp16 bits), x (T, nb, 32) fp32 -> out (T, N) fp32."""
    n, nb, _ = qs.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                for b in range(nb):
                    add_block(acc, qs[r, b], 0, x[t, b], f16_to_f32(d[r, b]), float32(8.0), False)
                out[t, r] = lane_sum(acc)


@kernel
def q5_0_matvec(qs, d, qh, x, out):
    """As q4_0_matvec, with qh (N, nb) int32 (the fifth bits) and codes offset by 16."""
    n, nb, _ = qs.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                for b in range(nb):
                    add_block(acc, qs[r, b], qh[r, b], x[t, b], f16_to_f32(d[r, b]), float32(16.0), True)
                out[t, r] = lane_sum(acc)


@kernel
def q4_1_matvec(qs, d, m, x, out):
    """As q4_0_matvec, with m (N, nb) int16 (fp16 bits, the minimum) and no offset."""
    n, nb, _ = qs.shape
    xsum = block_sums(x)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for b in range(nb):
                    add_block(acc, qs[r, b], 0, x[t, b], f16_to_f32(d[r, b]), float32(0.0), False)
                    low += f16_to_f32(m[r, b]) * xsum[t, b]
                out[t, r] = lane_sum(acc) + low


@kernel
def q5_1_matvec(qs, d, m, qh, x, out):
    """As q4_1_matvec, with qh (N, nb) int32 (the fifth bits)."""
    n, nb, _ = qs.shape
    xsum = block_sums(x)
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                low = float32(0.0)
                for b in range(nb):
                    add_block(acc, qs[r, b], qh[r, b], x[t, b], f16_to_f32(d[r, b]), float32(0.0), True)
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


MATVECS = {(False, False): q4_0_matvec, (True, False): q4_1_matvec, (False, True): q5_0_matvec,
           (True, True): q5_1_matvec}


def family(has_min: bool, fifth: bool):
    """(planes, matvec, expand) of one format: Q4_0 (no minimum, no fifth bit, codes offset by 8), Q4_1,
    Q5_0 (offset 16), Q5_1. `planes` are its parts as the kernels take them: (qs (N, nb, 16), d[, m][, qh])."""
    offset = 0 if has_min else (16 if fifth else 8)
    run = MATVECS[has_min, fifth]

    def planes(parts):
        qs, d = parts[0], parts[1]
        n, nb = d.shape
        rest = [p.view(torch.int16).numpy() for p in parts[2 : 2 + has_min]] + [parts[-1].numpy()] * fifth
        return (qs.numpy().reshape(n, nb, 16), d.view(torch.int16).numpy(), *rest)

    def matvec(planes, x, out) -> None:
        run(*planes, x.numpy().reshape(x.shape[0], -1, 32), out.numpy())

    def expand(planes, out) -> None:
        qs, d = planes[0], planes[1]
        m = planes[2] if has_min else NO_PLANE.view(np.int16)
        qh = planes[-1] if fifth else NO_PLANE
        nibble_expand(qs, d, m, qh, offset, has_min, fifth, out.numpy().reshape(qs.shape[0], qs.shape[1], 32))

    return planes, matvec, expand
