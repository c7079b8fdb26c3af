"""Generation as small functions beside the model: prefill, then decode one token at a time."""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol

import torch

from gguflm.errors import GGUFLMError
from gguflm.kv_cache import KVCache
from gguflm.sampling import SamplerTensors, SamplingParams, sample


class Backend(Protocol):
    """What generation needs from a model implementation (reference or Triton)."""

    device: torch.device

    def new_cache(self, max_ctx: int | None = None) -> KVCache: ...

    def prefill(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor: ...

    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor: ...


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


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
    device = model.device
    tensors = SamplerTensors.from_params(params, device)
    gen = make_generator(params.seed, device)
    recent = list(prompt[-params.repeat_last_n :]) if params.repeat_last_n else []

    logits = model.prefill(prompt, cache)[-1]
    for step in range(max_new_tokens):
        if step:
            if cache.length >= cache.max_ctx:
                return
            logits = model.decode(token, cache)
        if params.greedy and params.repeat_penalty == 1.0:
            token = int(logits.argmax())
        else:
            history = torch.tensor(recent or [-1], dtype=torch.long, device=device)
            token = int(sample(logits, tensors, history, gen))
        yield token
        if token in stop:
            return
        if params.repeat_last_n:
            recent = (recent + [token])[-params.repeat_last_n :]
