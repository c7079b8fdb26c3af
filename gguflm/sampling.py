"""Token sampling as llama.cpp chains it: penalties (repeat, frequency, presence), top-k, top-p, min-p,
temperature, then a seeded draw.

Every step is a tensor op on the logits' device with the parameters as tensors, so a caller
can run it without a host sync, and inside a CUDA graph. There temperature, top-p, min-p and the
penalty strength are copied in; top-k and the penalty window size shape the captured code, so
each value of those gets a graph of its own (`cuda_graph.GraphKey`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gguflm.sampling_params import GREEDY, SamplingParams

__all__ = ["GREEDY", "Sampler", "SamplerTensors", "SamplingParams", "apply_penalties", "apply_repeat_penalty",
           "pick", "sample", "seed_generator", "token_counts"]


@dataclass
class SamplerTensors:
    """The parameters as 0-d tensors on the sampling device (static buffers for graph replay)."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    repeat_penalty: torch.Tensor
    frequency_penalty: torch.Tensor
    presence_penalty: torch.Tensor

    @classmethod
    def from_params(cls, p: SamplingParams, device: str | torch.device) -> "SamplerTensors":
        def f32(x: float) -> torch.Tensor:
            return torch.tensor(float(x), dtype=torch.float32, device=device)

        top_k = torch.tensor(p.top_k, dtype=torch.long, device=device)
        return cls(f32(p.temperature), top_k, f32(p.top_p), f32(p.min_p), f32(p.repeat_penalty),
                   f32(p.frequency_penalty), f32(p.presence_penalty))

    def copy_from(self, p: SamplingParams) -> None:
        """Update in place (no re-allocation, so a captured graph sees the new values)."""
        for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "frequency_penalty",
                     "presence_penalty"):
            getattr(self, name).fill_(getattr(p, name))


def seed_generator(gen: torch.Generator, seed: int | None) -> torch.Generator:
    """Seed `gen` with `seed`, or from fresh entropy when None."""
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


@dataclass
class Sampler:
    """One sequence's sampling: its parameters, their tensors and its own generator, seeded once, so a
    seeded request draws the same tokens whatever else runs beside it."""

    params: SamplingParams
    tensors: SamplerTensors
    generator: torch.Generator

    @classmethod
    def new(cls, params: SamplingParams, device: str | torch.device) -> "Sampler":
        generator = seed_generator(torch.Generator(device=device), params.seed)
        return cls(params, SamplerTensors.from_params(params, device), generator)

    def pick(self, logits: torch.Tensor, tokens: list[int]) -> int:
        """One token id from logits (n_vocab,), the penalties reading the end of `tokens`."""
        return pick(logits, self.params, self.tensors, tokens, self.generator)


def pick(logits: torch.Tensor, p: SamplingParams, t: SamplerTensors, tokens: list[int], gen: torch.Generator) -> int:
    """One token id from logits (n_vocab,) with the penalty reading the end of `tokens` (one host sync)."""
    if p.argmax_only:
        return int(logits.argmax())
    recent = tokens[len(tokens) - p.penalty_window :] if p.penalty_window else []
    history = torch.tensor(recent or [-1], dtype=torch.long, device=logits.device)
    return int(sample(logits, t, history, gen, top_k=p.top_k))


def token_counts(logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """How often each token id occurs in `history` ((R,) long, -1 = empty slot), shaped like logits."""
    valid = history >= 0
    return torch.zeros_like(logits).scatter_add_(0, history.clamp(min=0), valid.to(logits.dtype))


def apply_repeat_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Penalize each distinct token in `history` (R,) long, -1 = empty slot) once, as llama.cpp does."""
    return _repeat(logits, token_counts(logits, history) > 0, penalty)


def _repeat(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def apply_penalties(logits: torch.Tensor, history: torch.Tensor, t: SamplerTensors) -> torch.Tensor:
    """llama.cpp's penalties over the tokens in `history`: the repeat penalty once per distinct token, then
    count * frequency_penalty + presence_penalty subtracted."""
    counts = token_counts(logits, history)
    seen = counts > 0
    return (_repeat(logits, seen, t.repeat_penalty) - counts * t.frequency_penalty
            - seen.to(logits.dtype) * t.presence_penalty)


def sample(
    logits: torch.Tensor,
    t: SamplerTensors,
    history: torch.Tensor,
    generator: torch.Generator | None = None,
    top_k: int = 0,
) -> torch.Tensor:
    """Draw one token id (a (1,) long tensor) from logits (n_vocab,) fp32, without a host sync.

    `top_k` > 0 (a fixed value, e.g. baked into a CUDA graph) ranks only that many candidates with
    torch.topk instead of sorting the whole vocabulary; t.top_k must then not exceed it.
    """
    logits = apply_penalties(logits.float(), history, t)
    greedy = logits.argmax().reshape(1)

    if 0 < top_k < logits.shape[0]:
        sorted_logits, order = logits.topk(top_k)  # (top_k,), descending
    else:
        sorted_logits, order = logits.sort(descending=True)  # (n_vocab,)
    ranks = torch.arange(sorted_logits.shape[0], device=logits.device)
    keep = (ranks < t.top_k) | (t.top_k <= 0)
    probs = torch.softmax(sorted_logits.masked_fill(~keep, float("-inf")), dim=0)
    keep &= (probs.cumsum(0) - probs) < t.top_p  # the smallest prefix with mass >= top_p
    keep &= probs >= t.min_p * probs[0]
    # temperature last, on the survivors, as llama.cpp's default chain does
    scaled = sorted_logits / t.temperature.clamp(min=1e-6)
    final = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=0)
    noise = torch.empty_like(final).exponential_(generator=generator)
    choice = (final / noise).argmax()  # an exponential race draws from `final`
    return torch.where(t.temperature <= 0, greedy, order.gather(0, choice.reshape(1)))  # no host read
