"""The CPU kernels: a matvec per format family that reads the packed blocks where they lie, and the
GEMM path for runs of rows (prefill), dispatched on the format's `kernel` name.

Every block format (Q8_0, the legacy 4/5-bit ones, Q2_K-Q6_K, IQ4_NL, IQ4_XS) rounds x to 8 bits per
32-value block, as llama.cpp does: their matvecs take integer block dots (`int8`, `int8_k`) and their
GEMM path multiplies the same rounded x, so prefill and decode compute one product. F32, F16 and
BF16 multiply in fp32, equal to the reference's products to
fp32 summation order (models.md, "CPU backend"). The matvecs take numpy arrays (`matvecs`,
`linear_array`: the CPU backend's layer loop); `linear` and `linear_rows` are their tensor face.
A format without a CPU kernel here is computed by the reference's chunked expansion (`ops.linear`);
an F32 prefill is torch's GEMM on the weight as it lies.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numba
import numpy as np
import torch

from gguflm import ops
from gguflm.cpu import dense, int8, iq4, nibbles, q2_k, q3_k, q4_k, q6_k, q8_0
from gguflm.quants import PackedWeight, StackedWeight
from gguflm.numba_jit import start_threads
from gguflm.registry import Registry

# Rows of x from which a product goes through the GEMM path (expand a chunk of weight rows to fp32,
# multiply with torch) rather than the matvec (which recomputes every weight for each row of x).
GEMM_ROWS = 8
# A matvec over fewer weight bytes than this runs on one thread whatever the thread count (a row's sum is
# the same on any thread count). It was 4 MiB while each launch also set numba's thread count (10-20 us a
# call); with that set only on a change, every matvec gains from the second core. SmolLM2 Q4_K_M decode at
# 2 threads, 2-core box, load 1.3-1.4, 2026-12-02 (/tmp A/B, 4 rounds): 28 tok/s with 4 MiB, 36-38 with 0.
PARALLEL_BYTES = 0


@dataclass(frozen=True)
class CpuKernel:
    """The CPU kernels of one format family (`QuantFormat.kernel`)."""

    name: str
    # (parts or planes, x (T, K) fp32, out (T, N) fp32): numpy arrays, C-contiguous
    matvec: Callable[[tuple, np.ndarray, np.ndarray], None]
    expand: Callable[[tuple, torch.Tensor], None]  # (parts or planes of R rows, out (R, K) fp32)
    block: int = 32  # row lengths must be a multiple of this
    # parts -> the arrays matvec and expand take instead (numpy views, rows along dim 0), made once per
    # weight and kept in its `cache`: the per-call views cost more than a small matvec (None: the parts)
    planes: Callable[[tuple[torch.Tensor, ...]], tuple] | None = None
    # the matvec rounds x to 8 bits per 32-value block (`int8`): the GEMM path multiplies the same
    # rounded x, so prefill and decode compute one product
    rounds_x: bool = False
    # for such a format with a block minimum (w = d q + m): planes -> m (N, K/32) as fp16 bits, which
    # meets q8_1's s (fp16 d * sum(q)) in the matvec, and so in the GEMM path too
    minimum: Callable[[tuple], np.ndarray] | None = None


KERNELS: Registry[CpuKernel] = Registry(key=lambda k: k.name)
register = KERNELS.register
register(CpuKernel("dense", dense.matvec, dense.expand))  # F32, F16, BF16
register(CpuKernel("q8_0", q8_0.matvec, q8_0.expand, planes=q8_0.planes, rounds_x=True))
register(CpuKernel("iq4_nl", iq4.nl_matvec, iq4.nl_expand, 32, iq4.nl_planes, rounds_x=True))
register(CpuKernel("iq4_xs", iq4.xs_matvec, iq4.xs_expand, 256, iq4.xs_planes, rounds_x=True))
for _name, _has_min, _fifth in (("q4_0", False, False), ("q4_1", True, False), ("q5_0", False, True),
                                ("q5_1", True, True)):
    _planes, _matvec, _expand = nibbles.family(_has_min, _fifth)
    register(CpuKernel(_name, _matvec, _expand, planes=_planes, rounds_x=True,
                       minimum=nibbles.minimum if _has_min else None))
for _name, _mod in (("q2_k", q2_k), ("q3_k", q3_k), ("q4_k", q4_k), ("q5_k", q4_k), ("q6_k", q6_k)):
    register(CpuKernel(_name, _mod.matvec, _mod.expand, block=256, planes=_mod.planes, rounds_x=True))


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
        _use_threads(n)
        yield


_SET = threading.local()  # .n: the numba thread count this thread last set here


def _use_threads(n: int) -> None:
    """numba on `n` threads, torch on one; numba's count set only where it differs from what this
    thread last set (numba's get and set cost 10-20 us a call, at 140 calls a token)."""
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    if getattr(_SET, "n", None) != n:
        numba.set_num_threads(n)
        _SET.n = n
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def prepared(w: PackedWeight) -> tuple[CpuKernel, tuple, int] | None:
    """`w`'s kernel, the planes it takes and its byte count, found once and kept in `w.cache`; None:
    the reference path."""
    got = w.cache.get("cpu", False)
    if got is False:
        kern = kernel_for(w)
        got = None if kern is None else (kern, planes_of(kern, w.parts), w.nbytes)
        w.cache["cpu"] = got
    return got


def planes_of(kern: CpuKernel, parts: tuple[torch.Tensor, ...]) -> tuple:
    """The arrays `kern`'s matvec and expand take for a weight's `parts`."""
    return kern.planes(parts) if kern.planes else parts


def linear(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None, n_threads: int = 1) -> torch.Tensor:
    """x (T, K) @ W^T (+ bias) -> (T, N) fp32: the matvec for a few rows, the GEMM path for more
    (for a weight held as fp32, torch's GEMM on it as it lies); a stacked weight piece by piece, each
    written into its columns of one output."""
    gemm = x.shape[0] >= GEMM_ROWS
    if isinstance(w, PackedWeight) and (prepared(w) is None or (gemm and w.parts[0].dtype == torch.float32)):
        return ops.linear(x, w, bias)
    if not gemm:
        return torch.from_numpy(matvecs(_array(x), w, _bias(bias), n_threads))
    return _gemm_products(x, w, bias, n_threads)


def linear_rows(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None,
                n_threads: int = 1) -> torch.Tensor:
    """`linear` with every row of x (B, K) computed as it is alone (the matvec at any B): bit for bit
    what `linear` gives that row as a one-row product."""
    if isinstance(w, PackedWeight) and prepared(w) is None:
        return ops.linear_rows(x, w, bias)
    return torch.from_numpy(matvecs(_array(x), w, _bias(bias), n_threads, ops.linear_rows))


def linear_array(x: np.ndarray, w: PackedWeight | StackedWeight, bias: np.ndarray | None = None,
                 n_threads: int = 1) -> np.ndarray:
    """`linear` on numpy arrays (x (T, K) fp32 C-contiguous, bias (N,) fp32): the CPU backend's layer loop
    keeps its activations as arrays (a tensor's creation and its `.numpy()` cost 2-4 us each, some 10 a
    product at decode)."""
    if x.shape[0] < GEMM_ROWS:
        return matvecs(x, w, bias, n_threads)
    return linear(torch.from_numpy(x), w, None if bias is None else torch.from_numpy(bias), n_threads).numpy()


def _array(x: torch.Tensor) -> np.ndarray:
    return x.float().contiguous().numpy()


def _bias(bias: torch.Tensor | None) -> np.ndarray | None:
    return None if bias is None else bias.float().numpy()


def matvecs(x: np.ndarray, w: PackedWeight | StackedWeight, bias: np.ndarray | None = None, n_threads: int = 1,
            reference: Callable = ops.linear) -> np.ndarray:
    """x (T, K) fp32 C-contiguous @ W^T (+ bias) -> (T, N) fp32, each row by the matvec (so as if alone),
    each piece of a stacked weight into its columns of one output; a piece without a kernel by
    `reference` (ops.linear, or ops.linear_rows for row-exact products)."""
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
    at = 0
    stacked = isinstance(w, StackedWeight)
    for piece in w.pieces if stacked else (w,):
        n = piece.parts[0].shape[0]
        cols = out[:, at : at + n] if stacked else out  # (T, n) of this piece: contiguous where T == 1
        at += n
        prep = prepared(piece)
        if prep is None:
            cols[...] = reference(torch.from_numpy(x), piece).numpy()
            continue
        kern, planes, nbytes = prep
        part = cols if cols.flags.c_contiguous else np.empty(cols.shape, dtype=np.float32)
        with _LAUNCH:
            _use_threads(n_threads if nbytes >= PARALLEL_BYTES else 1)
            kern.matvec(planes, x, part)
        if part is not cols:
            cols[...] = part
    if bias is not None:
        out += bias
    return out


def _gemm_products(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None,
                   n_threads: int) -> torch.Tensor:
    """The GEMM path's product of each piece of `w` into its columns of one output; a piece without a
    kernel, or held as fp32, by ops.linear."""
    x = x.float().contiguous()
    out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32)
    rounded = None  # x as the int8 matvecs round it, made once for the pieces that need it
    at = 0
    for piece in w.pieces if isinstance(w, StackedWeight) else (w,):
        n = piece.parts[0].shape[0]
        cols = out[:, at : at + n]
        at += n
        prep = prepared(piece)
        if prep is None or piece.parts[0].dtype == torch.float32:
            cols.copy_(ops.linear(x, piece))
            continue
        kern, planes, _ = prep
        part = cols if cols.is_contiguous() else torch.empty(cols.shape, dtype=torch.float32)
        with _LAUNCH:
            _use_threads(n_threads)
            if kern.rounds_x:
                if rounded is None:
                    rounded = int8.rounded(x)
                _gemm(rounded[0], piece, kern, planes, part)
                if kern.minimum is not None:  # the minimum meets s, not the rounded block's sum
                    m = torch.from_numpy(kern.minimum(planes)).view(torch.float16).float()  # (N, K/32)
                    part += rounded[1] @ m.T
            else:
                _gemm(x, piece, kern, planes, part)
        if part is not cols:
            cols.copy_(part)
    return out if bias is None else out + bias


def _gemm(x: torch.Tensor, w: PackedWeight, kern: CpuKernel, planes: tuple, out: torch.Tensor) -> None:
    """Weight rows expanded to fp32 a chunk at a time into one reused buffer (it stays in cache while
    torch's GEMM reads it), never the whole matrix; out (T, N)."""
    n, k = w.shape
    step = max(1, min(n, ops.EXPAND_BYTES // (4 * k)))
    buf = torch.empty((step, k), dtype=torch.float32)
    for a in range(0, n, step):
        rows = tuple(p[a : a + step] for p in planes) if kern.planes else w.rows(slice(a, a + step)).parts
        part = buf[: min(step, n - a)]
        kern.expand(rows, part)
        out[:, a : a + step] = x @ part.t()
