"""Generation the plainest way, independent of the Engine: the oracle the engine's tests compare against."""

from __future__ import annotations

import torch


def greedy_ids(backend, prompt: list[int], n: int, stop_ids=()) -> list[int]:
    """Prefill the whole prompt into a fresh cache, then decode one argmax token at a time (stop ids yielded)."""
    cache = backend.new_cache(len(prompt) + n)
    logits = backend.prefill(prompt, cache)[-1]
    out: list[int] = []
    for step in range(n):
        if step:
            logits = backend.decode(out[-1], cache)
        out.append(int(torch.argmax(logits)))
        if out[-1] in stop_ids:
            break
    return out
