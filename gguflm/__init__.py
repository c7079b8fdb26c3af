"""gguflm: run GGUF language models with Triton kernels and a CUDA-graphed decode loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.errors import GGUFLMError
from gguflm.sampling_params import SamplingParams  # torch-free: the CLI checks options with it

if TYPE_CHECKING:
    from gguflm.model import Model, load

__version__ = "0.1.0"
__all__ = ["GGUFLMError", "Model", "SamplingParams", "load"]

_LAZY = {"Model": "gguflm.model", "load": "gguflm.model"}


def __getattr__(name: str):
    """Import torch-backed names on first use, so `gguflm --help` need not load torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gguflm' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included (for completion in a REPL)."""
    return sorted(set(globals()) | set(_LAZY))
