"""The CUDA backend: every decode op is a Triton kernel writing into preallocated buffers.

Same interface as the reference `Transformer`. `decode_step` reads its token and position from
device tensors and writes only static buffers and the cache, so one CUDA graph can capture it.
Prefill runs the Q8_0 GEMM and torch SDPA with a lower-right causal mask into the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention.bias import causal_lower_right

from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.kernels import (GemvConfig, RopeConfig, attention_decode, q8_gemm, q8_gemv, q8_gemv_silu_mul, rmsnorm,
                            rope_and_cache)
from gguflm.kv_cache import KVCache
from gguflm.quants import QuantWeight
from gguflm.weights import ModelWeights, Weight

# ---------------------------------------------------------------------------- weights and buffers


def kernel_args(w: Weight) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(qs, d) as the GEMV takes them: a Q8_0 weight's two buffers, or a dense matrix and None."""
    return (w.qs, w.d) if isinstance(w, QuantWeight) else (w, None)


def interpreter_gemv_config(w: Weight, n_mats: int = 1) -> GemvConfig:
    """Under TRITON_INTERPRET programs run one after another in numpy: few wide ones keep tests fast."""
    n, k = w.shape
    block_k = max(32, min(256, triton.next_power_of_2(k)))  # the kernel works in 32-wide blocks
    return GemvConfig(block_n=min(256, triton.next_power_of_2(n // n_mats)), block_k=block_k, split_k=1, num_warps=1)


def activation_dtype(weights: ModelWeights) -> torch.dtype:
    """bf16 for models stored in bf16 (fp16 could overflow their activations), else fp16."""
    w = weights.layers[0].wqkv if weights.layers else weights.tok_embd
    return torch.bfloat16 if isinstance(w, torch.Tensor) and w.dtype == torch.bfloat16 else torch.float16


@dataclass
class DecodeBuffers:
    """Static activations of one decode step: a captured graph reads and writes these addresses."""

    token: torch.Tensor  # (1,) long
    pos: torch.Tensor  # (1,) int32, the position the token is written at
    x: torch.Tensor  # (dim,) fp32, the residual stream
    h: torch.Tensor  # (dim,) fp32, the normalized residual
    qkv: torch.Tensor  # (q_dim + 2 * kv_dim,) fp32
    q: torch.Tensor  # (n_heads, head_dim) fp32, rotated
    attn: torch.Tensor  # (n_heads, head_dim) fp32
    ff: torch.Tensor  # (ffn_dim,) fp32, silu(gate) * up
    logits: torch.Tensor  # (n_vocab,) fp32

    @classmethod
    def allocate(cls, cfg: ModelConfig, device: torch.device) -> "DecodeBuffers":
        def f32(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float32, device=device)

        return cls(
            token=torch.zeros(1, dtype=torch.long, device=device),
            pos=torch.zeros(1, dtype=torch.int32, device=device),
            x=f32(cfg.dim),
            h=f32(cfg.dim),
            qkv=f32(cfg.q_dim + 2 * cfg.kv_dim),
            q=f32(cfg.n_heads, cfg.head_dim),
            attn=f32(cfg.n_heads, cfg.head_dim),
            ff=f32(cfg.ffn_dim),
            logits=f32(cfg.n_vocab),
        )


def embed_rows(w: Weight, tokens: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (T, dim) fp32 = rows `tokens` (T,) of the embedding table, gathered on the device."""
    if isinstance(w, QuantWeight):
        t, dim = out.shape
        qs = w.qs.index_select(0, tokens).view(t, dim // 32, 32)  # (T, dim/32, 32) int8
        d = w.d.index_select(0, tokens).view(t, dim // 32, 1).float()  # (T, dim/32, 1)
        torch.mul(qs, d, out=out.view(t, dim // 32, 32))  # int8 * fp32 -> fp32, written in place
        return out
    return out.copy_(w.index_select(0, tokens))


# ---------------------------------------------------------------------------- the backend


class TritonBackend:
    """The model on Triton kernels: `prefill` fills a cache, `decode`/`decode_step` extend it by one token."""

    def __init__(self, cfg: ModelConfig, weights: ModelWeights):
        self.cfg = cfg
        self.weights = weights
        self.act_dtype = activation_dtype(weights)
        self.rope = RopeConfig(
            head_dim=cfg.head_dim,
            rot_dim=cfg.rope_dim,
            base=cfg.rope_base,
            mode=cfg.rope_mode,
            pos_scale=cfg.rope_scale,
            freq_factors=weights.rope_freqs,
        )
        self.buf = DecodeBuffers.allocate(cfg, self.device)

    @property
    def device(self) -> torch.device:
        return self.weights.output_norm.device

    @property
    def cache_dtype(self) -> torch.dtype:
        return self.act_dtype

    def new_cache(self, max_ctx: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        return KVCache.allocate(self.cfg, max_ctx or self.cfg.n_ctx_train, self.device, dtype or self.cache_dtype)

    # ------------------------------------------------------------------ decode

    @torch.inference_mode()
    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token after the cache's contents; returns logits (n_vocab,) fp32."""
        if cache.length >= cache.max_ctx:
            raise GGUFLMError(f"context is full: {cache.length} + 1 tokens exceed the context size {cache.max_ctx}")
        self.buf.token.copy_(torch.as_tensor(token).reshape(1))
        self.buf.pos.fill_(cache.length)
        logits = self._step(cache).clone()
        cache.length += 1
        return logits

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Graph-safe decode: token (1,) long and pos (1,) long/int32 on the device; returns logits (n_vocab,).

        The result is a static buffer, overwritten by the next step; the caller keeps `cache.length`.
        """
        if token.data_ptr() != self.buf.token.data_ptr():
            self.buf.token.copy_(token)
        if pos.data_ptr() != self.buf.pos.data_ptr():
            self.buf.pos.copy_(pos)  # long -> int32 on the device
        return self._step(cache)

    def _step(self, cache: KVCache) -> torch.Tensor:
        """All layers and the output head for buf.token at buf.pos: kernel launches only, no host sync."""
        cfg, w, b = self.cfg, self.weights, self.buf
        eps = cfg.norm_eps
        embed_rows(w.tok_embd, b.token, b.x.view(1, cfg.dim))
        for i, layer in enumerate(w.layers):
            rmsnorm(b.x, layer.attn_norm, eps, out=b.h)
            q8_gemv(b.h, *kernel_args(layer.wqkv), bias=layer.bqkv, out=b.qkv, config=self._tiles(layer.wqkv))
            rope_and_cache(
                b.qkv, b.pos, cache.k[i], cache.v[i], self.rope, n_head=cfg.n_heads,
                q_out=b.q, q_norm=layer.q_norm, k_norm=layer.k_norm, norm_eps=eps,
            )
            attention_decode(b.q, cache.k[i], cache.v[i], b.pos, out=b.attn)
            q8_gemv(b.attn.view(cfg.q_dim), *kernel_args(layer.wo), residual=b.x, out=b.x, config=self._tiles(layer.wo))
            rmsnorm(b.x, layer.ffn_norm, eps, out=b.h)
            q8_gemv_silu_mul(b.h, *kernel_args(layer.w_gate_up), out=b.ff, config=self._tiles(layer.w_gate_up, 2))
            q8_gemv(b.ff, *kernel_args(layer.w_down), residual=b.x, out=b.x, config=self._tiles(layer.w_down))
        rmsnorm(b.x, w.output_norm, eps, out=b.h)
        return q8_gemv(b.h, *kernel_args(w.output), out=b.logits, config=self._tiles(w.output))

    def _tiles(self, w: Weight, n_mats: int = 1) -> GemvConfig | None:
        """GEMV tiles: the launcher's own choice on a GPU, few wide programs under the interpreter."""
        return None if self.device.type == "cuda" else interpreter_gemv_config(w, n_mats)

    # ------------------------------------------------------------------ prefill

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Run `tokens` (T,) after the cache's current contents; returns logits (T, n_vocab) fp32."""
        h = self._prefill_hidden(tokens, cache)  # (T, dim)
        if not h.shape[0]:
            return torch.empty((0, self.cfg.n_vocab), device=self.device)
        return self._linear(h, self.weights.output)

    @torch.inference_mode()
    def prefill_last(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """Like `prefill`, but only the last position's logits (n_vocab,): the head runs on one row."""
        h = self._prefill_hidden(tokens, cache)
        if not h.shape[0]:
            raise GGUFLMError("prefill_last needs at least one token")
        return self._linear(h[-1:], self.weights.output)[0]

    def _prefill_hidden(self, tokens: torch.Tensor | list[int], cache: KVCache) -> torch.Tensor:
        """All layers for tokens (T,) at cache.length..; advances cache.length; returns normed hidden (T, dim)."""
        cfg, w = self.cfg, self.weights
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).to(self.device)
        start, n = cache.length, tokens.shape[0]
        if start + n > cache.max_ctx:
            raise GGUFLMError(f"context is full: {start} + {n} tokens exceed the context size {cache.max_ctx}")
        if n == 0:
            return torch.empty((0, cfg.dim), device=self.device)
        pos = torch.tensor([start], dtype=torch.int32, device=self.device)
        x = embed_rows(w.tok_embd, tokens, torch.empty((n, cfg.dim), device=self.device))  # (T, dim) fp32
        for i, layer in enumerate(w.layers):
            h = rmsnorm(x, layer.attn_norm, cfg.norm_eps)[0]
            qkv = self._linear(h, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim) fp32
            q = rope_and_cache(
                qkv, pos, cache.k[i], cache.v[i], self.rope, n_head=cfg.n_heads,
                q_norm=layer.q_norm, k_norm=layer.k_norm, norm_eps=cfg.norm_eps,
            )  # (T, n_heads, head_dim), rotated in place inside qkv
            x = x + self._linear(self._attend(q, cache.k[i], cache.v[i], start), layer.wo)
            h = rmsnorm(x, layer.ffn_norm, cfg.norm_eps)[0]
            gate, up = self._linear(h, layer.w_gate_up).chunk(2, dim=-1)  # (T, ffn_dim) each
            x = x + self._linear(F.silu(gate) * up, layer.w_down, wide=True)
        cache.length = start + n
        return rmsnorm(x, w.output_norm, cfg.norm_eps)[0]

    def _linear(self, x: torch.Tensor, w: Weight, bias: torch.Tensor | None = None, wide: bool = False) -> torch.Tensor:
        """x (T, K) fp32 @ W^T -> (T, N) fp32: the Q8_0 GEMM on fp16/bf16 inputs, or torch for dense weights.

        wide: x is not normalized (the SwiGLU product); rows past fp16's range are scaled down first.
        """
        scale = None
        if wide and self.act_dtype == torch.float16:
            # a power of two keeps the fp16 rounding of every row exactly as it was; 1 for rows under 2^14
            scale = torch.exp2(torch.log2(x.abs().amax(dim=1, keepdim=True) / 2**14).ceil().clamp(min=0))  # (T, 1)
            x = x / scale
        if isinstance(w, QuantWeight):
            out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32, device=x.device)
            y = q8_gemm(x.to(self.act_dtype), w.qs, w.d, out=out)
        else:
            y = F.linear(x.to(w.dtype), w).float()
        if scale is not None:
            y = y * scale
        return y if bias is None else y + bias

    def _attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int) -> torch.Tensor:
        """Causal attention of q (T, n_heads, hd) at positions start.. over cache rows [0, start + T); -> (T, q_dim)."""
        n, n_heads, hd = q.shape
        span = start + n
        # SDPA in the cache dtype on the GPU (flash / memory-efficient kernels); fp32 math on the CPU
        dtype = k_cache.dtype if q.is_cuda else torch.float32
        group = n_heads // k_cache.shape[0]
        keys = k_cache[:, :span].to(dtype).repeat_interleave(group, dim=0)  # (n_heads, span, hd)
        values = v_cache[:, :span].to(dtype).repeat_interleave(group, dim=0)
        # an empty cache is plain causal (flash kernels); after a prefix the diagonal sits at the right
        mask = None if start == 0 else causal_lower_right(n, span)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1).to(dtype)[None], keys[None], values[None], attn_mask=mask, is_causal=start == 0
        )  # (1, n_heads, T, hd)
        return out[0].transpose(0, 1).reshape(n, n_heads * hd).float()
