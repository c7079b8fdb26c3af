"""The reference backend: the transformer in plain torch ops (`gguflm.ops`), on the CPU or CUDA.

It is the CPU path and the oracle every Triton kernel is checked against. Activations are fp32;
weights stay packed and are expanded to fp32 a chunk of rows at a time, inside `ops.linear`.
"""

from __future__ import annotations

import torch

from gguflm import ops
from gguflm.backends.base import Backend
from gguflm.kv_cache import KVCache
from gguflm.weights import LayerWeights


class ReferenceBackend(Backend):
    """Each layer: x += attention(rmsnorm(x)); x += feed_forward(rmsnorm(x)); then the output head."""

    cache_dtype = torch.float32

    def __init__(self, cfg, weights):
        super().__init__(cfg, weights)
        self.rope = ops.Rope.of(cfg, weights.rope_freqs)

    def hidden(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        start = cache.length
        positions = torch.arange(start, start + tokens.shape[0], device=self.device)
        return self._layers(tokens, positions, cache, start + tokens.shape[0])

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return ops.linear(h, self.weights.output)  # (T, n_vocab)

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Reads and writes the cache at `pos` only through tensors and attends over the whole
        (masked) cache, so shapes never change; the caller keeps `cache.length` up to date."""
        return self.head(self._layers(token, pos.long(), cache, cache.max_ctx))[0]

    # ------------------------------------------------------------------ the layers

    def _layers(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, span: int) -> torch.Tensor:
        """Tokens (T,) at `positions` (T,); attention reads cache rows [0, span) up to each position."""
        cfg, w = self.cfg, self.weights
        mask = ops.causal_mask(positions, span)  # (T, span)
        x = ops.embed(w.tok_embd, tokens)  # (T, dim)
        for i, layer in enumerate(w.layers):
            x = x + self._attention(i, layer, ops.rmsnorm(x, layer.attn_norm, cfg.norm_eps), positions, mask, cache)
            x = x + self._feed_forward(layer, ops.rmsnorm(x, layer.ffn_norm, cfg.norm_eps))
        return ops.rmsnorm(x, w.output_norm, cfg.norm_eps)

    def _attention(self, i: int, layer: LayerWeights, h: torch.Tensor, positions: torch.Tensor,
                   mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        cfg, span = self.cfg, mask.shape[1]
        qkv = ops.linear(h, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim)
        q, k, v = ops.qkv_heads(qkv, positions, self.rope, cfg.n_heads, cfg.n_kv_heads,
                                layer.q_norm, layer.k_norm, cfg.norm_eps)
        k_layer, v_layer = cache.layer(i)  # quantized as stored, when the cache type is a block format
        k_layer.write(positions, k)
        v_layer.write(positions, v)
        out = ops.attention(q, k_layer.read(0, span), v_layer.read(0, span), mask)  # (T, q_dim)
        return ops.linear(out, layer.wo)

    def _feed_forward(self, layer: LayerWeights, h: torch.Tensor) -> torch.Tensor:
        return ops.linear(ops.silu_mul(ops.linear(h, layer.w_gate_up)), layer.w_down)
