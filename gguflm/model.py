"""The pure-torch reference forward: RMSNorm, RoPE, GQA attention over the KV cache, SwiGLU.

It is the CPU backend and the oracle every Triton kernel is checked against. Activations are fp32;
weights stay as loaded (Q8_0 is dequantized one matrix at a time, inside `linear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.kv_cache import KVCache
from gguflm.quants import QuantWeight
from gguflm.weights import LayerWeights, ModelWeights, Weight

# ---------------------------------------------------------------------------- building blocks


# fp32 rows expanded at a time: a whole expanded matrix (a 128k-vocab head is 1 GiB) would be
# allocated and page-faulted afresh on every call; chunks under glibc's mmap threshold are reused.
EXPAND_BYTES = 16 << 20


def dense(w: Weight) -> torch.Tensor:
    """The fp32 (N, K) matrix of a weight."""
    return w.dequantize() if isinstance(w, QuantWeight) else w.float()


def linear(x: torch.Tensor, w: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (T, K) @ W.T -> (T, N), expanding a Q8_0/F16/BF16 weight to fp32 a block of rows at a time."""
    if isinstance(w, torch.Tensor) and w.dtype == torch.float32:
        return F.linear(x, w, bias)
    n, k = w.shape
    step = max(1, EXPAND_BYTES // (4 * k))
    if step >= n:
        return F.linear(x, dense(w), bias)
    out = torch.empty(x.shape[:-1] + (n,), dtype=torch.float32, device=x.device)
    for a in range(0, n, step):
        rows = QuantWeight(w.qs[a : a + step], w.d[a : a + step]) if isinstance(w, QuantWeight) else w[a : a + step]
        out[..., a : a + step] = F.linear(x, dense(rows))
    return out if bias is None else out + bias


def embed(w: Weight, tokens: torch.Tensor) -> torch.Tensor:
    """Rows of the embedding table: (T,) -> (T, dim) fp32."""
    return dense(w.rows(tokens)) if isinstance(w, QuantWeight) else w[tokens].float()


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_angles(cfg: ModelConfig, positions: torch.Tensor, freq_factors: torch.Tensor | None) -> torch.Tensor:
    """Rotation angles (T, rope_dim / 2): pos / scale * base^(-2i / rope_dim) / factor_i."""
    exponents = torch.arange(0, cfg.rope_dim, 2, dtype=torch.float32, device=positions.device) / cfg.rope_dim
    inv_freq = 1.0 / (cfg.rope_base**exponents)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    return (positions.float() / cfg.rope_scale)[:, None] * inv_freq[None, :]


def apply_rope(x: torch.Tensor, angles: torch.Tensor, mode: str) -> torch.Tensor:
    """Rotate the first rope_dim dims of each head. x: (T, n_heads, head_dim); angles: (T, rope_dim/2)."""
    rot_dim = 2 * angles.shape[-1]
    rot, rest = x[..., :rot_dim], x[..., rot_dim:]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]  # (T, 1, rope_dim/2)
    if mode == "normal":  # adjacent pairs (x[2i], x[2i+1])
        a, b = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    else:  # "neox": halves (x[i], x[i + rot_dim/2])
        a, b = rot[..., : rot_dim // 2], rot[..., rot_dim // 2 :]
        rotated = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return torch.cat((rotated, rest), dim=-1)


# ---------------------------------------------------------------------------- the transformer


class Transformer:
    """Reference model over loaded weights: `prefill` fills a cache, `decode` extends it by one token."""

    def __init__(self, cfg: ModelConfig, weights: ModelWeights):
        self.cfg = cfg
        self.weights = weights

    @property
    def device(self) -> torch.device:
        return self.weights.output_norm.device

    @property
    def cache_dtype(self) -> torch.dtype:
        return torch.float32

    def new_cache(self, max_ctx: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        return KVCache.allocate(self.cfg, max_ctx or self.cfg.n_ctx_train, self.device, dtype or self.cache_dtype)

    def prefill(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Run `tokens` (T,) after the cache's current contents; returns logits (T, n_vocab) fp32."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device).reshape(-1)
        return self.forward(tokens, cache)

    def prefill_last(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Like `prefill`, but only the last position's logits (n_vocab,): the head runs on one row."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device).reshape(-1)
        if tokens.shape[0] == 0:
            raise GGUFLMError("prefill_last needs at least one token")
        return self.forward(tokens, cache, last_only=True)[0]

    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token after the cache's contents; returns logits (n_vocab,) fp32."""
        return self.prefill(torch.as_tensor(token).reshape(1), cache)[0]

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Graph-safe decode: token (1,) long and pos (1,) long on the device; returns logits (n_vocab,).

        Reads and writes the cache at `pos` only through tensors and attends over the whole
        (masked) cache, so shapes never change; the caller keeps `cache.length` up to date.
        """
        return self._run(token, pos, cache, cache.max_ctx)[0]

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
        """Run tokens (T,) after the cache's contents; returns logits (T, n_vocab) fp32 (last_only: (1, n_vocab))."""
        start, n = cache.length, tokens.shape[0]
        if start + n > cache.max_ctx:
            raise GGUFLMError(f"context is full: {start} + {n} tokens exceed the context size {cache.max_ctx}")
        if n == 0:
            return torch.empty((0, self.cfg.n_vocab), device=self.device)
        positions = torch.arange(start, start + n, device=self.device)
        logits = self._run(tokens, positions, cache, start + n, last_only)
        cache.length = start + n
        return logits

    def _run(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, span: int, last_only: bool = False
    ) -> torch.Tensor:
        """Tokens (T,) at `positions` (T,); attention reads cache entries [0, span) up to each position."""
        cfg, w = self.cfg, self.weights
        angles = rope_angles(cfg, positions, w.rope_freqs)  # (T, rope_dim/2)
        mask = torch.arange(span, device=self.device)[None, :] <= positions[:, None]  # (T, span)
        x = embed(w.tok_embd, tokens)  # (T, dim)
        for i, layer in enumerate(w.layers):
            h = rmsnorm(x, layer.attn_norm, cfg.norm_eps)
            x = x + self._attention(i, layer, h, angles, positions, mask, cache)
            x = x + self._feed_forward(layer, rmsnorm(x, layer.ffn_norm, cfg.norm_eps))
        if last_only:
            x = x[-1:]
        return linear(rmsnorm(x, w.output_norm, cfg.norm_eps), w.output)  # (T, n_vocab)

    def _attention(
        self,
        i: int,
        layer: LayerWeights,
        x: torch.Tensor,
        angles: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        cfg = self.cfg
        n, span = x.shape[0], mask.shape[1]
        qkv = linear(x, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim)
        q, k, v = qkv.split((cfg.q_dim, cfg.kv_dim, cfg.kv_dim), dim=-1)
        q = q.view(n, cfg.n_heads, cfg.head_dim)
        k = k.view(n, cfg.n_kv_heads, cfg.head_dim)
        v = v.view(n, cfg.n_kv_heads, cfg.head_dim)
        if layer.q_norm is not None:
            q = rmsnorm(q, layer.q_norm, cfg.norm_eps)
        if layer.k_norm is not None:
            k = rmsnorm(k, layer.k_norm, cfg.norm_eps)
        q = apply_rope(q, angles, cfg.rope_mode)
        k = apply_rope(k, angles, cfg.rope_mode)

        # (n_kv_heads, T, head_dim) written at `positions` of this layer's (n_kv_heads, max_ctx, head_dim)
        cache.k[i].index_copy_(1, positions, k.transpose(0, 1).to(cache.k.dtype))
        cache.v[i].index_copy_(1, positions, v.transpose(0, 1).to(cache.v.dtype))
        group = cfg.n_heads // cfg.n_kv_heads
        keys = cache.k[i, :, :span].float().repeat_interleave(group, dim=0)  # (n_heads, span, head_dim)
        values = cache.v[i, :, :span].float().repeat_interleave(group, dim=0)
        out = F.scaled_dot_product_attention(q.transpose(0, 1), keys, values, attn_mask=mask)  # (n_heads, T, hd)
        return linear(out.transpose(0, 1).reshape(n, cfg.q_dim), layer.wo)

    def _feed_forward(self, layer: LayerWeights, x: torch.Tensor) -> torch.Tensor:
        gate, up = linear(x, layer.w_gate_up).chunk(2, dim=-1)  # (T, ffn_dim) each
        return linear(F.silu(gate) * up, layer.w_down)
