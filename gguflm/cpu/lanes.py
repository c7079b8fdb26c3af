"""What the fp32-lane CPU matvec kernels share: rows per parallel task and the fixed-order sum of 32 lanes."""

from __future__ import annotations

import numba

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
