"""The Triton backend: every decode op is a Triton kernel writing into preallocated buffers.

`decode_step` reads its token and position from device tensors and writes only static buffers
and the cache, so one CUDA graph can capture it. `decode_batch` runs the same layers over B rows,
each at its own position in its own slot of a `KVPool` (the GEMVs take M rows; RoPE/cache store
and decode attention read per-row positions and slots), for a graph per batch-size bucket. Prefill runs the GEMM launcher (Q8_0 tiles
dequantized in SRAM, dense weights through cuBLAS, superblock formats dequantized by a Triton kernel
for cuBLAS) and torch SDPA with a lower-right causal mask.
The layer loops read like the reference backend's: attention block, then feed-forward block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from gguflm import ops, quants
from gguflm.backends.base import Backend, check_room
from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.kernels import attention_decode, gemm, gemv, gemv_silu_mul, rmsnorm, rope_and_cache, supports
from gguflm.kv_cache import CacheLayer, KVCache, KVPool
from gguflm.quants import PackedWeight, StackedWeight
from gguflm.weights import LayerWeights, ModelWeights

# ---------------------------------------------------------------------------- weights and buffers


def activation_dtype(weights: ModelWeights) -> torch.dtype:
    """bf16 for models stored in bf16 (fp16 could overflow their activations), else fp16."""
    w = weights.layers[0].wqkv if weights.layers else weights.tok_embd
    return torch.bfloat16 if any(f.torch_dtype == torch.bfloat16 for f in quants.formats(w)) else torch.float16


def check_kernels(weights: ModelWeights) -> None:
    """A clear error, naming the weight, for a format the kernels cannot read."""
    for name, w in weights.tensors():
        for fmt in quants.formats(w) if isinstance(w, (PackedWeight, StackedWeight)) else ():
            if not supports(fmt):
                raise GGUFLMError(f"the triton backend has no kernel for {name}'s format {fmt.name} "
                                  "(use the reference backend)")


@dataclass
class DecodeBuffers:
    """Activations of one decode step: a captured graph reads and writes these addresses.
    A batch of B rows has each buffer with a leading (B,) dimension."""

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
    def allocate(cls, cfg: ModelConfig, device: torch.device, rows: int | None = None) -> "DecodeBuffers":
        """Zeroed buffers of one token; with `rows`, uninitialized ones of that many (every element is
        written before it is read: inside a capture they come from the graph's pool, fixed)."""
        lead = () if rows is None else (rows,)

        def f32(*shape: int) -> torch.Tensor:
            make = torch.zeros if rows is None else torch.empty
            return make((*lead, *shape), dtype=torch.float32, device=device)

        return cls(
            token=torch.zeros(lead or 1, dtype=torch.long, device=device),
            pos=torch.zeros(lead or 1, dtype=torch.int32, device=device),
            x=f32(cfg.dim),
            h=f32(cfg.dim),
            qkv=f32(cfg.q_dim + 2 * cfg.kv_dim),
            q=f32(cfg.n_heads, cfg.head_dim),
            attn=f32(cfg.n_heads, cfg.head_dim),
            ff=f32(cfg.ffn_dim),
            logits=f32(cfg.n_vocab),
        )


# ---------------------------------------------------------------------------- the backend


class TritonBackend(Backend):
    """The model on Triton kernels: `prefill` fills a cache, `decode`/`decode_step` extend it by one token."""

    def __init__(self, cfg: ModelConfig, weights: ModelWeights):
        super().__init__(cfg, weights)
        check_kernels(weights)
        self.act_dtype = activation_dtype(weights)
        self.cache_dtype = self.act_dtype
        self.rope = ops.Rope.of(cfg, weights.rope_freqs)
        self.buf = DecodeBuffers.allocate(cfg, self.device)

    # ------------------------------------------------------------------ decode

    @torch.inference_mode()
    def decode(self, token: int | torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token after the cache's contents; returns logits (n_vocab,) fp32."""
        check_room(cache, 1)
        self.buf.token.copy_(torch.as_tensor(token).reshape(1))
        self.buf.pos.fill_(cache.length)
        logits = self._step(cache).clone()
        cache.length += 1
        return logits

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The result is a static buffer, overwritten by the next step; the caller keeps `cache.length`."""
        if token.data_ptr() != self.buf.token.data_ptr():
            self.buf.token.copy_(token)
        if pos.data_ptr() != self.buf.pos.data_ptr():
            self.buf.pos.copy_(pos)  # long -> int32 on the device
        return self._step(cache)

    @torch.inference_mode()
    def decode_batch(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                     pool: KVPool) -> torch.Tensor:
        """Graph-safe: kernel launches only; the activations are allocated per call (fixed in a capture)."""
        b = DecodeBuffers.allocate(self.cfg, self.device, rows=tokens.shape[0])
        b.x.copy_(ops.embed(self.weights.tok_embd, tokens))
        return self._layers(b, positions, pool.layer, slots)

    def _step(self, cache: KVCache) -> torch.Tensor:
        """All layers and the output head for buf.token at buf.pos: kernel launches only, no host sync."""
        b = self.buf
        b.x.copy_(ops.embed(self.weights.tok_embd, b.token)[0])
        return self._layers(b, b.pos, cache.layer, None)

    def _layers(self, b: DecodeBuffers, pos: torch.Tensor, cache_layer, slots: torch.Tensor | None) -> torch.Tensor:
        """The decode layers and head over b.x: one token (slots None, caches `cache_layer(i)` plain) or a
        batch (rows at positions pos (B,) of slots (B,), caches `cache_layer(i)` pooled); -> b.logits."""
        cfg, w = self.cfg, self.weights
        for i, layer in enumerate(w.layers):
            rmsnorm(b.x, layer.attn_norm, cfg.norm_eps, out=b.h)
            self._decode_attention(b, layer, *cache_layer(i), pos, slots)  # b.x += attention(b.h)
            rmsnorm(b.x, layer.ffn_norm, cfg.norm_eps, out=b.h)
            gemv_silu_mul(b.h, layer.w_gate_up, out=b.ff)
            gemv(b.ff, layer.w_down, residual=b.x, out=b.x)
        rmsnorm(b.x, w.output_norm, cfg.norm_eps, out=b.h)
        return gemv(b.h, w.output, out=b.logits)

    def _decode_attention(self, b: DecodeBuffers, layer: LayerWeights, k_layer: CacheLayer, v_layer: CacheLayer,
                          pos: torch.Tensor, slots: torch.Tensor | None) -> None:
        cfg = self.cfg
        gemv(b.h, layer.wqkv, bias=layer.bqkv, out=b.qkv)
        rope_and_cache(b.qkv, pos, k_layer, v_layer, self.rope, n_head=cfg.n_heads, q_out=b.q,
                       q_norm=layer.q_norm, k_norm=layer.k_norm, norm_eps=cfg.norm_eps, slots=slots)
        attention_decode(b.q, k_layer, v_layer, pos, out=b.attn, slots=slots)
        gemv(b.attn.view(*b.attn.shape[:-2], cfg.q_dim), layer.wo, residual=b.x, out=b.x)

    # ------------------------------------------------------------------ prefill

    def hidden(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        cfg, w = self.cfg, self.weights
        start = cache.length
        pos = torch.tensor([start], dtype=torch.int32, device=self.device)
        x = ops.embed(w.tok_embd, tokens)  # (T, dim) fp32
        for i, layer in enumerate(w.layers):
            x = x + self._prefill_attention(i, layer, rmsnorm(x, layer.attn_norm, cfg.norm_eps), pos, start, cache)
            h = rmsnorm(x, layer.ffn_norm, cfg.norm_eps)
            x = x + self._linear(ops.silu_mul(self._linear(h, layer.w_gate_up)), layer.w_down, wide=True)
        return rmsnorm(x, w.output_norm, cfg.norm_eps)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self._linear(h, self.weights.output)

    def _prefill_attention(self, i: int, layer: LayerWeights, h: torch.Tensor, pos: torch.Tensor, start: int,
                           cache: KVCache) -> torch.Tensor:
        cfg = self.cfg
        k_layer, v_layer = cache.layer(i)
        qkv = self._linear(h, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim) fp32
        q = rope_and_cache(qkv, pos, k_layer, v_layer, self.rope, n_head=cfg.n_heads,
                           q_norm=layer.q_norm, k_norm=layer.k_norm, norm_eps=cfg.norm_eps)  # rotated inside qkv
        if k_layer.kind.quantized or v_layer.kind.quantized:
            attended = attend_tiles(q, k_layer, v_layer, start)
        else:
            attended = self._attend(q, k_layer.data, v_layer.data, start)
        return self._linear(attended, layer.wo)

    def _linear(self, x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None,
                wide: bool = False) -> torch.Tensor:
        """x (T, K) fp32 @ W^T -> (T, N) fp32 through the GEMM launcher.

        wide: x is not normalized (the SwiGLU product); rows past fp16's range are scaled down first.
        """
        scale = None
        if wide and self.act_dtype == torch.float16:
            # a power of two keeps the fp16 rounding of every row exactly as it was; 1 for rows under 2^14
            scale = torch.exp2(torch.log2(x.abs().amax(dim=1, keepdim=True) / 2**14).ceil().clamp(min=0))  # (T, 1)
            x = x / scale
        y = gemm(x, w, self.act_dtype)
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


ATTEND_TILE = 1024  # cache rows dequantized at a time from a block-quantized cache


def attend_tiles(q: torch.Tensor, k_layer: CacheLayer, v_layer: CacheLayer, start: int) -> torch.Tensor:
    """Causal attention of q (T, n_heads, hd) at positions start.. over cache rows [0, start + T), the
    cache dequantized ATTEND_TILE rows at a time (online softmax: never the whole cache at once); -> (T, q_dim)."""
    n, n_heads, hd = q.shape
    span = start + n
    group = n_heads // k_layer.data.shape[0]
    qh = q.transpose(0, 1).float() / math.sqrt(hd)  # (n_heads, T, hd)
    positions = torch.arange(start, span, device=q.device)
    m = torch.full((n_heads, n, 1), float("-inf"), device=q.device)  # running max
    l = torch.zeros((n_heads, n, 1), device=q.device)  # running sum of exp
    acc = torch.zeros((n_heads, n, hd), device=q.device)
    for a in range(0, span, ATTEND_TILE):  # tile 0 holds row 0, which every query sees: m is finite after it
        b = min(span, a + ATTEND_TILE)
        k = k_layer.read(a, b).repeat_interleave(group, dim=0)  # (n_heads, tile, hd)
        v = v_layer.read(a, b).repeat_interleave(group, dim=0)
        s = (qh @ k.transpose(1, 2)).masked_fill(
            torch.arange(a, b, device=q.device)[None, None, :] > positions[None, :, None], float("-inf"))
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        alpha = torch.exp(m - m_new)
        l = l * alpha + p.sum(-1, keepdim=True)
        acc = acc * alpha + p @ v
        m = m_new
    return (acc / l).transpose(0, 1).reshape(n, n_heads * hd)
