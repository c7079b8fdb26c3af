"""The CPU kernels: a matvec per format family that reads the packed blocks where they lie, and the
GEMM path for runs of rows (prefill), dispatched on the format's `kernel` name.

Activations stay fp32 (no 8-bit rounding of x): each product is dequantize-and-multiply in
registers, so results equal the reference's to fp32 summation order (models.md, "CPU backend").
A format without a CPU kernel here is computed by the reference's chunked expansion (`ops.linear`);
an F32 prefill is torch's GEMM on the weight as it lies.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numba
import torch

from gguflm import ops
from gguflm.cpu import dense, nibbles, q4_k, q8_0
from gguflm.cpu.jit import start_threads
from gguflm.cpu import iq4, q2_k, q3_k
from gguflm.quants import PackedWeight, StackedWeight
from gguflm.registry import Registry

# Rows of x from which a product goes through the GEMM path (expand a chunk of weight rows to fp32,
# multiply with torch) rather than the matvec (which recomputes every weight for each row of x).
GEMM_ROWS = 8
# A matvec over fewer weight bytes than this runs on one thread whatever the thread count: waking the
# pool costs more than the other cores save (a row's sum is the same on any thread count). Measured on the
# 2-core box, SmolLM2 Q8_0 decode at 2 threads (scripts/bench_cpu.py): 56-68 tok/s with 4 MiB, 36-42 with 0.
PARALLEL_BYTES = 4 << 20


@dataclass(frozen=True)
class CpuKernel:
    """The CPU kernels of one format family (`QuantFormat.kernel`)."""

    name: str
    matvec: Callable[[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor], None]  # (parts, x (T, K), out (T, N))
    expand: Callable[[tuple[torch.Tensor, ...], torch.Tensor], None]  # (parts of R rows, out (R, K) fp32)
    block: int = 32  # row lengths must be a multiple of this


KERNELS: Registry[CpuKernel] = Registry(key=lambda k: k.name)
register = KERNELS.register
register(CpuKernel("dense", dense.matvec, dense.expand))  # F32, F16, BF16
register(CpuKernel("q8_0", q8_0.matvec, q8_0.expand))
register(CpuKernel("q2_k", q2_k.matvec, q2_k.expand, block=256))
register(CpuKernel("q3_k", q3_k.matvec, q3_k.expand, block=256))
register(CpuKernel("iq4_nl", iq4.nl_matvec, iq4.nl_expand))
register(CpuKernel("iq4_xs", iq4.xs_matvec, iq4.xs_expand, block=256))
for _name, _has_min, _fifth in (("q4_0", False, False), ("q4_1", True, False), ("q5_0", False, True),
                                ("q5_1", True, True)):
    register(CpuKernel(_name, *nibbles.family(_has_min, _fifth)))
register(CpuKernel("q4_k", q4_k.matvec, q4_k.expand, block=256))


def kernel_for(w: PackedWeight) -> CpuKernel | None:
    """The CPU kernel that runs `w`, or None where the reference path does (formats without one)."""
    if w.device.type != "cpu":
        return None
    kern = KERNELS.lookup(w.fmt.kernel)
    if kern is not None and kern.name == "dense" and w.parts[0].dtype not in dense.DTYPES:
        return None
    return kern if kern is not None and w.k % kern.block == 0 else None


_LAUNCH = threading.Lock()  # one kernel at a time (numba's workqueue layer, the fallback, allows no more)
start_threads()


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Kernels launched inside run on `n` threads (numba's count is per calling thread: a server's
    worker thread gets it too); torch's own ops on one, as two thread pools on the same cores make each
    other wait (measured on a 2-core box: prefill 30 tok/s with torch on 2 threads, 146-216 on 1)."""
    with _LAUNCH:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        yield


def linear(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None, n_threads: int = 1) -> torch.Tensor:
    """x (T, K) @ W^T (+ bias) -> (T, N) fp32: the matvec for a few rows, the GEMM path for more
    (for a weight held as fp32, torch's GEMM on it as it lies); a stacked weight piece by piece."""
    if isinstance(w, StackedWeight):
        out = torch.cat([linear(x, piece, None, n_threads) for piece in w.pieces], dim=-1)
        return out if bias is None else out + bias
    kern = kernel_for(w)
    if kern is None or (x.shape[0] >= GEMM_ROWS and w.parts[0].dtype == torch.float32):
        return ops.linear(x, w, bias)
    x = x.float().contiguous()
    gemm = x.shape[0] >= GEMM_ROWS
    with threads(n_threads if gemm or w.nbytes >= PARALLEL_BYTES else 1):
        out = _gemm(x, w, kern) if gemm else _matvec(x, w, kern)
    return out if bias is None else out + bias


def linear_rows(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None,
                n_threads: int = 1) -> torch.Tensor:
    """`linear` with every row of x (B, K) computed as it is alone (the matvec at any B): bit for bit
    what `linear` gives that row as a one-row product."""
    if isinstance(w, StackedWeight):
        out = torch.cat([linear_rows(x, piece, None, n_threads) for piece in w.pieces], dim=-1)
        return out if bias is None else out + bias
    kern = kernel_for(w)
    if kern is None:
        return ops.linear_rows(x, w, bias)
    with threads(n_threads):
        out = _matvec(x.float().contiguous(), w, kern)
    return out if bias is None else out + bias


def _matvec(x: torch.Tensor, w: PackedWeight, kern: CpuKernel) -> torch.Tensor:
    out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32)
    kern.matvec(w.parts, x, out)
    return out


def _gemm(x: torch.Tensor, w: PackedWeight, kern: CpuKernel) -> torch.Tensor:
    """Weight rows expanded to fp32 a chunk at a time into one reused buffer (it stays in cache while
    torch's GEMM reads it), never the whole matrix."""
    n, k = w.shape
    step = max(1, min(n, ops.EXPAND_BYTES // (4 * k)))
    out = torch.empty((x.shape[0], n), dtype=torch.float32)
    buf = torch.empty((step, k), dtype=torch.float32)
    for a in range(0, n, step):
        rows = w.rows(slice(a, a + step))
        part = buf[: rows.shape[0]]
        kern.expand(rows.parts, part)
        out[:, a : a + step] = x @ part.t()
    return out
