"""What every CPU matvec kernel shares: rows per parallel task, the fixed-order sum of 32 lanes, and
the block sums of x (for the formats with a minimum)."""

from __future__ import annotations

import numba
import numpy as np
from numba import float32

ROWS_PER_TASK = 16  # rows one prange task computes: its lane buffer is allocated once for all of them


@numba.njit(inline="always", boundscheck=False)
def lane_sum(acc):
    """The 32 lanes of `acc` added as a tree (halves, then quarters, ...): the same order for every row."""
    for i in range(16):
        acc[i] += acc[i + 16]
    for i in range(8):
        acc[i] += acc[i + 8]
    for i in range(4):
        acc[i] += acc[i + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


@numba.njit(inline="always", boundscheck=False)
def block_sums(x):
    """x (T, nb, L) fp32 -> (T, nb) fp32, each block's values added in index order: made once per
    call inside the kernel (a torch sum beside it cost a call of its own)."""
    t, nb, width = x.shape
    out = np.empty((t, nb), np.float32)
    for i in range(t):
        for b in range(nb):
            s = float32(0.0)
            for j in range(width):
                s += x[i, b, j]
            out[i, b] = s
    return out
