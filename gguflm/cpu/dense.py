"""F32, F16 and BF16 on the CPU: weights (N, K) as stored, widened to fp32 in registers inside the matvec.

The lanes and their sum are those of the Q8_0 kernel (`lanes`); the GEMM path widens chunks of rows
with torch (one converting copy). K must be a multiple of 32.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from gguflm.cpu.jit import bf16_to_f32, f16_to_f32, kernel
from gguflm.cpu.lanes import ROWS_PER_TASK, lane_sum

DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the buffers the dense kernels read


@kernel
def f32_matvec(w, x, out):
    """w (N, nb, 32) fp32, x (T, nb, 32) fp32 -> out (T, N) fp32."""
    n, nb, _ = w.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                for b in range(nb):
                    for j in range(32):
                        acc[j] += w[r, b, j] * x[t, b, j]
                out[t, r] = lane_sum(acc)


@kernel
def f16_matvec(w, x, out):
    """w (N, nb, 32) int16 (fp16 bits), x (T, nb, 32) fp32 -> out (T, N) fp32."""
    n, nb, _ = w.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                for b in range(nb):
                    for j in range(32):
                        acc[j] += f16_to_f32(w[r, b, j]) * x[t, b, j]
                out[t, r] = lane_sum(acc)


@kernel
def bf16_matvec(w, x, out):
    """w (N, nb, 32) int16 (bf16 bits), x (T, nb, 32) fp32 -> out (T, N) fp32."""
    n, nb, _ = w.shape
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            for t in range(x.shape[0]):
                acc[:] = 0
                for b in range(nb):
                    for j in range(32):
                        acc[j] += bf16_to_f32(w[r, b, j]) * x[t, b, j]
                out[t, r] = lane_sum(acc)


def matvec(parts, x, out) -> None:
    (w,) = parts
    n, k = w.shape
    xb = x.reshape(x.shape[0], k // 32, 32)
    if w.dtype == torch.float32:
        f32_matvec(w.numpy().reshape(n, k // 32, 32), xb, out)
    else:
        run = f16_matvec if w.dtype == torch.float16 else bf16_matvec
        run(w.view(torch.int16).numpy().reshape(n, k // 32, 32), xb, out)


def expand(parts, out) -> None:
    out.copy_(parts[0])  # (R, K) widened to fp32 in one pass
