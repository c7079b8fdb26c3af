"""The front door: `model = gguflm.load(path)`, then `model.generate(ids)` or `model.stream(ids)`.

A Model is a file, its config and weights, a backend that runs them, and the tokenizer. Every
generation goes through an `Engine` (chunked prefill, prefix reuse, CUDA graphs on a GPU):
`generate`/`stream` use one the model keeps, sized to the request; `new_engine` gives another.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Callable, Iterable, Iterator

import gguf
import torch

from gguflm.backends import Backend, make_backend, resolve_backend
from gguflm.config import ModelConfig
from gguflm.threads import check_threads
from gguflm.engine import Engine, cache_types, choose_context
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import GGUFFile, open_gguf
from gguflm.kv_cache import cache_type
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
    """A loaded GGUF model: its file, config, weights, the backend that runs them, and its tokenizer."""

    def __init__(self, gf: GGUFFile, config: ModelConfig, weights: ModelWeights, backend: Backend,
                 cache_type_k: str | None = None, cache_type_v: str | None = None):
        self.file = gf
        self.config = config
        self.weights = weights
        self.backend = backend
        self.cache_types = cache_types(backend, cache_type_k, cache_type_v)  # the engines' KV cache types
        self._engine: Engine | None = None

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def has_tokenizer(self) -> bool:
        return self.file.get(gguf.Keys.Tokenizer.MODEL, "none") not in ("none", "no_vocab")

    @cached_property
    def tokenizer(self):
        """The tokenizer built from the file's `tokenizer.ggml.*` metadata."""
        from gguflm.tokenizer import Tokenizer

        return Tokenizer.from_gguf(self.file)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Logits (T, n_vocab) fp32 for every position of `tokens`, in a fresh cache."""
        return self.backend.prefill(tokens, self.backend.new_cache(len(tokens)))

    def new_engine(self, ctx: int | None = None, graphs: bool | None = None, cache_type_k: str | None = None,
                   cache_type_v: str | None = None, slots: int = 1) -> Engine:
        """An engine with a cache of its own: `ctx` tokens (default: the model's, capped to fit), K and V
        in the model's cache types unless given (f32, f16, bf16, q8_0, q4_0); `slots` sequences of `ctx`
        tokens each, decoded together (serving)."""
        k, v = self.cache_types
        return Engine(self.backend, self.tokenizer if self.has_tokenizer else None, ctx=ctx, graphs=graphs,
                      cache_type_k=cache_type_k or k, cache_type_v=cache_type_v or v, slots=slots)

    def stream(
        self,
        prompt: list[int],
        max_new_tokens: int = 128,
        sampling: SamplingParams | None = None,
        stop_ids: Iterable[int] | None = None,
    ) -> Iterator[int]:
        """Yield generated token ids one at a time: greedy unless `sampling` says otherwise, ending
        after an end-of-generation id (or one of `stop_ids`, when given)."""
        engine = self._engine_for(len(prompt), max_new_tokens)
        return engine.generate_ids(prompt, max_new_tokens, sampling, stop_ids)

    def generate(self, prompt: list[int], max_new_tokens: int = 128, sampling: SamplingParams | None = None,
                 stop_ids: Iterable[int] | None = None) -> list[int]:
        """The generated token ids, as `stream` yields them."""
        return list(self.stream(prompt, max_new_tokens, sampling, stop_ids))

    def _engine_for(self, prompt_len: int, max_new_tokens: int) -> Engine:
        """The model's own engine, re-made larger when a request needs more room than it has.

        Sized to the request (prompt + new tokens), but not past the model's training context
        unless the prompt itself is longer. When it must grow it at least doubles, up to the
        context that fits by default, so a growing conversation re-makes it rarely.
        """
        need = min(prompt_len + max(max_new_tokens, 1), max(self.config.n_ctx_train, prompt_len + 1))
        old = self._engine
        if old is None or old.ctx < need:
            roomy = choose_context(self.backend, None, *self.cache_types)[0]
            size = need if old is None else max(need, min(2 * old.ctx, roomy))
            self._engine = None  # free the old cache before allocating the new one
            self._engine = self.new_engine(ctx=size)
        return self._engine


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
    cache_type_k: str | None = None,
    cache_type_v: str | None = None,
    threads: int | None = None,
) -> Model:
    """Open a GGUF file and stream its weights onto `device` (default: CUDA if present, else CPU).

    `backend` is "triton" (the default on CUDA), "cpu" (the default on the CPU: numba kernels over
    the packed blocks) or "reference" (plain torch, the oracle). `threads`: how many CPU threads
    compute (default: one per physical core; the process's torch and numba settings).
    `cache_type_k`/`cache_type_v`: the KV cache types its engines use (f32, f16, bf16, q8_0,
    q4_0, each independently; default: f32 on the CPU reference, the activation type on the GPU).
    """
    for name in (cache_type_k, cache_type_v):
        if name is not None:
            cache_type(name)  # a bad name is an error before the weights are read
    threads = None if threads is None else check_threads(threads)
    dev = resolve_device(device)
    name = resolve_backend(backend, dev)
    gf = open_gguf(path)
    if not gf.tensors:
        raise GGUFLMError(f"{gf.path} holds a vocabulary only, no weights: it can be tokenized "
                          "(gguflm tokenize) but not run")
    config = ModelConfig.from_gguf(gf)
    weights = load_weights(gf, config, dev, progress)
    return Model(gf, config, weights, make_backend(name, config, weights, threads), cache_type_k, cache_type_v)
