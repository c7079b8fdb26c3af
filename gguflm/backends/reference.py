"""The reference backend: the transformer in plain torch ops (`gguflm.ops`), on the CPU or CUDA.

It is the oracle every Triton and CPU kernel is checked against (and the CPU path without numba).
Activations are fp32; weights stay packed and are expanded to fp32 a chunk of rows at a time,
inside `ops.linear`.
"""

from __future__ import annotations

import torch

from gguflm import ops
from gguflm.backends.base import Backend
from gguflm.kv_cache import CacheLayer, KVCache, KVPool


class ReferenceBackend(Backend):
    """Each layer: x += attention(rmsnorm(x)); x += feed_forward(rmsnorm(x)); then the output head."""

    cache_dtype = torch.float32
    linear = staticmethod(ops.linear)  # x (T, K) @ W^T: how products are computed (the CPU backend's kernels)
    linear_rows = staticmethod(ops.linear_rows)  # the same, each row of x as if alone (batched decode)

    def __init__(self, cfg, weights):
        super().__init__(cfg, weights)
        self.rope = ops.Rope.of(cfg, weights.rope_freqs)

    def hidden(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        start = cache.length
        positions = torch.arange(start, start + tokens.shape[0], device=self.device)
        return self._layers(tokens, positions, self._attend_span(cache, positions, start + tokens.shape[0]))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h, self.weights.output)  # (T, n_vocab)

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Reads and writes the cache at `pos` only through tensors and attends over the whole
        (masked) cache, so shapes never change; the caller keeps `cache.length` up to date."""
        positions = pos.long()
        return self.head(self._layers(token, positions, self._attend_span(cache, positions, cache.max_ctx)))[0]

    @torch.inference_mode()
    def decode_batch(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                     pool: KVPool) -> torch.Tensor:
        """Each row computed as `decode` computes it alone: products row by row (`linear_rows`),
        attention over its own slot. Reads positions and slots on the host (not graph-safe)."""
        positions = positions.long()
        h = self._layers(tokens.long(), positions, self._attend_rows(pool, positions, slots), self.linear_rows)
        return self.linear_rows(h, self.weights.output)  # (B, n_vocab)

    # ------------------------------------------------------------------ the layers

    def _layers(self, tokens: torch.Tensor, positions: torch.Tensor, attend, linear=None) -> torch.Tensor:
        """Tokens (T,) at `positions` (T,); `attend(i, q, k, v)` stores k, v in layer i's cache and returns
        the attention output (T, q_dim); `linear` multiplies by a weight (default: `self.linear`)."""
        cfg, w = self.cfg, self.weights
        linear = linear or self.linear
        x = ops.embed(w.tok_embd, tokens)  # (T, dim)
        angles = ops.rope_angles(self.rope, positions)  # (cos, sin), each (T, rot_dim / 2): every layer's
        for i, layer in enumerate(w.layers):
            h = ops.rmsnorm(x, layer.attn_norm, cfg.norm_eps)
            qkv = linear(h, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim)
            q, k, v = ops.qkv_heads(qkv, positions, self.rope, cfg.n_heads, cfg.n_kv_heads,
                                    layer.q_norm, layer.k_norm, cfg.norm_eps, angles)
            x = x + linear(attend(i, q, k, v), layer.wo)
            h = ops.rmsnorm(x, layer.ffn_norm, cfg.norm_eps)
            x = x + linear(ops.silu_mul(linear(h, layer.w_gate_up)), layer.w_down)
        return ops.rmsnorm(x, w.output_norm, cfg.norm_eps)

    @staticmethod
    def _attend_span(cache: KVCache, positions: torch.Tensor, span: int):
        """One sequence: queries at `positions` see cache rows [0, span) up to their own position."""
        mask = ops.causal_mask(positions, span)  # (T, span)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return store_and_attend(*cache.layer(i), positions, span, mask, q, k, v)

        return attend

    @staticmethod
    def _attend_rows(pool: KVPool, positions: torch.Tensor, slots: torch.Tensor):
        """A batch: row b is its own sequence in slot slots[b], attending as a lone decode step would
        (the cache writes of all rows at once: a copy, or a quantization per 32-value block, per row). A row
        sees every row of its span, so it needs no mask: an all-true one would leave every score as it is."""
        rows = [(p + 1, s) for p, s in zip(positions.tolist(), slots.tolist())]
        slots = slots.long()

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k_pool, v_pool = pool.layer(i)
            k_pool.write_rows(slots, positions, k)
            v_pool.write_rows(slots, positions, v)
            return torch.cat([ops.attention(q[b : b + 1], k_pool.slot(s).read(0, span), v_pool.slot(s).read(0, span))
                              for b, (span, s) in enumerate(rows)])  # (B, q_dim)

        return attend


def store_and_attend(k_layer: CacheLayer, v_layer: CacheLayer, positions: torch.Tensor, span: int,
                     mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Write k, v (T, n_kv, hd) at `positions` (quantized as stored, for a block cache type), then attend
    q (T, n_heads, hd) over rows [0, span) under `mask`; -> (T, q_dim)."""
    k_layer.write(positions, k)
    v_layer.write(positions, v)
    return ops.attention(q, k_layer.read(0, span), v_layer.read(0, span), mask)
