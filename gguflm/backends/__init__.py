"""Model implementations behind one interface: `reference` (plain torch, CPU and CUDA; the oracle)
and `triton` (Triton kernels and CUDA graphs, the product)."""

from __future__ import annotations

import importlib.util
import os

import torch

from gguflm.backends.base import Backend
from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.weights import ModelWeights

BACKENDS = ("reference", "triton")

__all__ = ["BACKENDS", "Backend", "make_backend", "resolve_backend"]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """None: Triton kernels on CUDA (the torch reference when triton is not installed), the torch
    reference on the CPU; a named backend is checked."""
    if backend is None:
        return "triton" if device.type == "cuda" and has_triton() else "reference"
    if backend not in BACKENDS:
        raise GGUFLMError(f"unknown backend '{backend}' (use {' or '.join(BACKENDS)})")
    if backend == "triton" and not has_triton():
        raise GGUFLMError("the triton backend needs the triton package, which is not installed "
                          "(pip install 'gguflm[cuda]'; CUDA builds of torch bring it)")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise GGUFLMError("the triton backend needs a CUDA GPU (or TRITON_INTERPRET=1 to run it slowly on the CPU)")
    return backend


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def make_backend(name: str, cfg: ModelConfig, weights: ModelWeights) -> Backend:
    """The named backend over loaded weights (the Triton one imports triton: only when asked for)."""
    if name == "triton":
        from gguflm.backends.triton import TritonBackend

        return TritonBackend(cfg, weights)
    from gguflm.backends.reference import ReferenceBackend

    return ReferenceBackend(cfg, weights)
