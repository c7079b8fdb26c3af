"""Model implementations behind one interface: `reference` (plain torch, CPU and CUDA; the oracle),
`cpu` (the reference with numba kernels over the packed blocks; the CPU default) and `triton`
(Triton kernels and CUDA graphs, the product)."""

from __future__ import annotations

import importlib.util
import os

import torch

from gguflm.backends.base import Backend
from gguflm.config import ModelConfig
from gguflm.threads import set_threads
from gguflm.errors import GGUFLMError
from gguflm.weights import ModelWeights

BACKENDS = ("reference", "cpu", "triton")

__all__ = ["BACKENDS", "Backend", "make_backend", "resolve_backend"]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """None: Triton kernels on CUDA (the torch reference when triton is not installed), the CPU
    kernels on the CPU (the torch reference when numba is not installed); a named backend is checked."""
    if backend is None:
        if device.type == "cuda":
            return "triton" if has_triton() else "reference"
        return "cpu" if has_numba() else "reference"
    if backend not in BACKENDS:
        raise GGUFLMError(f"unknown backend '{backend}' (use {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]})")
    if backend == "cpu" and device.type != "cpu":
        raise GGUFLMError(f"the cpu backend runs on the CPU, not on {device} (use --device cpu)")
    if backend == "cpu" and not has_numba():
        raise GGUFLMError("the cpu backend needs the numba package, which is not installed (pip install numba)")
    if backend == "triton" and not has_triton():
        raise GGUFLMError("the triton backend needs the triton package, which is not installed "
                          "(pip install 'gguflm[cuda]'; CUDA builds of torch bring it)")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise GGUFLMError("the triton backend needs a CUDA GPU (or TRITON_INTERPRET=1 to run it slowly on the CPU)")
    return backend


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def has_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def make_backend(name: str, cfg: ModelConfig, weights: ModelWeights, threads: int | None = None) -> Backend:
    """The named backend over loaded weights (the Triton one imports triton, the CPU one numba: only
    when asked for). `threads`: how many CPU threads compute (default: the physical cores)."""
    if name == "triton":
        from gguflm.backends.triton import TritonBackend

        return TritonBackend(cfg, weights)
    if name == "cpu":
        from gguflm.backends.cpu import CpuBackend

        return CpuBackend(cfg, weights, threads)
    from gguflm.backends.reference import ReferenceBackend

    if threads is not None and weights.output_norm.device.type == "cpu":
        set_threads(threads, kernels=False)  # torch's own ops

    return ReferenceBackend(cfg, weights)
