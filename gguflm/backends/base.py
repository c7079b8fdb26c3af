"""The Backend: what the engine needs from a model implementation, and the parts both share.

A backend runs the transformer over a KV cache. `prefill` appends a run of tokens and returns
their logits; `decode` appends one; `decode_step` is the graph-safe form of `decode` (token and
position in device tensors, `cache.length` kept by the caller), so a CUDA graph can capture it.
`decode_batch` is the same step for B sequences of a `KVPool`, each row at its own position in
its own slot (serving); no row changes another's arithmetic.
"""

from __future__ import annotations

import torch

from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.kv_cache import KVCache, KVPool
from gguflm.weights import ModelWeights


class Backend:
    """Shared by the reference and Triton backends; each implements `hidden`, `head` and `decode_step`."""

    cache_dtype: torch.dtype  # the float type `new_cache` allocates K and V in by default

    def __init__(self, cfg: ModelConfig, weights: ModelWeights):
        self.cfg = cfg
        self.weights = weights

    @property
    def device(self) -> torch.device:
        return self.weights.output_norm.device

    def new_cache(self, max_ctx: int, k_type: str | torch.dtype | None = None,
                  v_type: str | torch.dtype | None = None) -> KVCache:
        """A cache of `max_ctx` positions; K and V each in the given cache type (`kv_cache.CACHE_TYPES`),
        by default in `cache_dtype`."""
        return KVCache.allocate(self.cfg, max_ctx, self.device, k_type or self.cache_dtype, v_type or self.cache_dtype)

    def new_pool(self, max_ctx: int, n_slots: int, k_type: str | torch.dtype | None = None,
                 v_type: str | torch.dtype | None = None) -> KVPool:
        """`n_slots` caches of `max_ctx` positions in one allocation, typed as `new_cache`'s."""
        return KVPool.allocate(self.cfg, max_ctx, n_slots, self.device, k_type or self.cache_dtype,
                               v_type or self.cache_dtype)

    # ------------------------------------------------------------------ what each backend implements

    def hidden(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """All layers for tokens (T,) at positions cache.length..; returns the normed hidden (T, dim) fp32."""
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (T, n_vocab) fp32 of normed hidden rows (T, dim): the output matrix."""
        raise NotImplementedError

    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Graph-safe decode: token (1,) long and pos (1,) on the device; returns logits (n_vocab,)."""
        raise NotImplementedError

    def decode_batch(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                     pool: KVPool) -> torch.Tensor:
        """Row b: tokens[b] written at positions[b] of slot slots[b], attending over that slot's rows
        [0, positions[b]]; tokens (B,) long, positions and slots (B,) int32 on the device; returns
        logits (B, n_vocab) fp32. Slot lengths are the caller's to keep."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared entry points

    def prefill(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Run `tokens` (T,) after the cache's contents; returns logits (T, n_vocab) fp32."""
        h = self._advance(tokens, cache)
        if not h.shape[0]:
            return torch.empty((0, self.cfg.n_vocab), device=self.device)
        return self.head(h)

    def prefill_last(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Like `prefill`, but only the last position's logits (n_vocab,): the head runs on one row."""
        h = self._advance(tokens, cache)
        if not h.shape[0]:
            raise GGUFLMError("prefill_last needs at least one token")
        return self.head(h[-1:])[0]

    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token after the cache's contents; returns logits (n_vocab,) fp32."""
        return self.prefill(torch.as_tensor(token).reshape(1), cache)[0]

    @torch.inference_mode()
    def _advance(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """`hidden` over tokens appended to the cache, which then holds them; (T, dim)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).to(self.device)
        start, n = cache.length, tokens.shape[0]
        check_room(cache, n)
        if n == 0:
            return torch.empty((0, self.cfg.dim), device=self.device)
        h = self.hidden(tokens, cache)
        cache.length = start + n
        return h


def check_room(cache: KVCache, n: int) -> None:
    if cache.length + n > cache.max_ctx:
        raise GGUFLMError(f"context is full: {cache.length} + {n} tokens exceed the context size {cache.max_ctx}")
