"""The API a user reaches for first: `model = gguflm.load(path)`, then `model.generate(ids)`."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Callable, Iterator

import torch

from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.generate import Backend, generate
from gguflm.gguf_file import GGUFFile, open_gguf
from gguflm.kv_cache import KVCache
from gguflm.model import Transformer
from gguflm.sampling import SamplingParams
from gguflm.weights import ModelWeights, load_weights


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA when present, else the CPU; an unavailable CUDA device is a clear error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GGUFLMError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GGUFLMError("device 'cuda' was asked for but no CUDA GPU is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GGUFLMError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA GPU(s) here)")
    if dev.type not in ("cpu", "cuda"):
        raise GGUFLMError(f"device '{device}' is not supported (use cpu, cuda, cuda:N or auto)")
    return dev


class Model:
    """A loaded GGUF model: its file, config, weights and the backend that runs them."""

    def __init__(self, gf: GGUFFile, config: ModelConfig, weights: ModelWeights, backend: Backend):
        self.file = gf
        self.config = config
        self.weights = weights
        self.backend = backend

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @cached_property
    def tokenizer(self):
        """The tokenizer built from the file's `tokenizer.ggml.*` metadata."""
        from gguflm.tokenizer import Tokenizer

        return Tokenizer.from_gguf(self.file)

    def new_cache(self, max_ctx: int | None = None) -> KVCache:
        return self.backend.new_cache(max_ctx)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Logits (T, n_vocab) fp32 for every position of `tokens`, in a fresh cache."""
        return self.backend.prefill(tokens, self.new_cache(len(tokens)))

    def stream(
        self,
        prompt: list[int],
        max_new_tokens: int = 128,
        sampling: SamplingParams | None = None,
        stop_ids: tuple[int, ...] = (),
        cache: KVCache | None = None,
    ) -> Iterator[int]:
        """Yield generated token ids one at a time."""
        return generate(self.backend, prompt, max_new_tokens, sampling or SamplingParams(), stop_ids, cache)

    def generate(self, prompt: list[int], max_new_tokens: int = 128, **kwargs) -> list[int]:
        """Generated token ids (greedy unless `sampling=SamplingParams(...)` says otherwise)."""
        kwargs.setdefault("sampling", SamplingParams.greedy_params())
        return list(self.stream(prompt, max_new_tokens, **kwargs))


BACKENDS = ("reference", "triton")


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """None: Triton kernels on CUDA, the torch reference on the CPU; a named backend is checked."""
    if backend is None:
        return "triton" if device.type == "cuda" else "reference"
    if backend not in BACKENDS:
        raise GGUFLMError(f"unknown backend '{backend}' (use {' or '.join(BACKENDS)})")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise GGUFLMError("the triton backend needs a CUDA GPU (or TRITON_INTERPRET=1 to run it slowly on the CPU)")
    return backend


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
) -> Model:
    """Open a GGUF file and stream its weights onto `device` (default: CUDA if present, else CPU).

    `backend` is "triton" (the default on CUDA) or "reference" (the default on the CPU).
    """
    dev = resolve_device(device)
    name = resolve_backend(backend, dev)
    gf = open_gguf(path)
    config = ModelConfig.from_gguf(gf)
    weights = load_weights(gf, config, dev, progress)
    if name == "triton":
        from gguflm.backend_triton import TritonBackend  # imports triton: only when asked for

        return Model(gf, config, weights, TritonBackend(config, weights))
    return Model(gf, config, weights, Transformer(config, weights))
