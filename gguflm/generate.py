"""Generation as small functions beside the model: prefill, then decode one token at a time."""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol

import torch

from gguflm.errors import GGUFLMError
from gguflm.kv_cache import KVCache
from gguflm.sampling import SamplerTensors, SamplingParams, pick, seed_generator


class Backend(Protocol):
    """What generation needs from a model implementation (the torch reference or the Triton one)."""

    device: torch.device
    cache_dtype: torch.dtype

    def new_cache(self, max_ctx: int | None = None) -> KVCache: ...

    def prefill(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Logits (T, n_vocab) fp32 of tokens (T,) appended after the cache's contents."""

    def prefill_last(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """The same, only the last position's logits (n_vocab,)."""

    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (n_vocab,) of one token appended after the cache's contents."""

    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Graph-safe decode: token and position are (1,) device tensors; cache.length is the caller's."""


def generate(
    model: Backend,
    prompt: list[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    stop_ids: Iterable[int] = (),
    cache: KVCache | None = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` sampled token ids after `prompt`; stops after yielding a stop id."""
    if not prompt:
        raise GGUFLMError("the prompt is empty: at least one token is needed")
    if cache is None:
        cache = model.new_cache(len(prompt) + max_new_tokens)
    if cache.length + len(prompt) > cache.max_ctx:
        raise GGUFLMError(f"the prompt has {len(prompt)} tokens but the context holds {cache.max_ctx}")
    stop = frozenset(stop_ids)
    tensors = SamplerTensors.from_params(params, model.device)
    gen = seed_generator(torch.Generator(device=model.device), params.seed)
    seq = list(prompt)  # what the cache holds, plus the token about to be fed

    logits = model.prefill(prompt, cache)[-1]
    for step in range(max_new_tokens):
        if step:
            if cache.length >= cache.max_ctx:
                return
            logits = model.decode(token, cache)
        token = pick(logits, params, tensors, seq, gen)
        seq.append(token)
        yield token
        if token in stop:
            return
