"""Decode attention (one query token) over the KV cache: GQA-aware flash-decoding.

Pass 1: grid (n_kv, NUM_SPLITS, B); program (g, s, b) attends all q heads of kv head g of row b
over the s-th slice of the valid length. Pass 2 merges the slices with their log-sum-exp weights.
The grid depends only on (n_kv, max_ctx, B), never on the valid length, so a CUDA graph replays it.
A batch (serving) gives each row its own length and cache slot; the split count never depends on B,
so a row's arithmetic is the same whatever else is in the batch.
Reference: `gguflm.ops.attention` over the valid rows.
"""

import math

import torch
import triton
import triton.language as tl

from gguflm.kv_cache import CacheLayer

from .kv_blocks import check_layer, check_rows, kind_of, layer_args, load_tile, slot_row, slot_strides
from .settings import ATTENTION_STAGES, ATTENTION_WARPS, MERGE_WARPS, attention_config, dot_dtype, num_sms

# ---------------------------------------------------------------------------- kernels


@triton.jit
def _attn_split_kernel(q_ptr, kc_ptr, ks_ptr, vc_ptr, vs_ptr, pos_ptr, slot_ptr, acc_ptr, ml_ptr, qk_scale,
                       n_head, max_ctx, s_qb, s_q, s_k0, s_k1, s_ks0, s_ks1, s_v0, s_v1, s_vs0, s_vs1,
                       s_kslot, s_ksslot, s_vslot, s_vsslot,
                       GROUP: tl.constexpr, HD: tl.constexpr, BLOCK_G: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, NUM_SPLITS: tl.constexpr,
                       DOT_TY: tl.constexpr, PREC: tl.constexpr, K_KIND: tl.constexpr, V_KIND: tl.constexpr,
                       BATCH: tl.constexpr):
    """q (B, n_head, HD); caches: one layer (n_kv, max_ctx, ...) each, in their cache formats
    (`kv_blocks.load_tile` dequantizes a tile in registers); valid length L = min(pos[0] + 1, max_ctx).
    BATCH: pooled layers (n_slots, n_kv, max_ctx, ...); row b reads slot slot[b], L = min(pos[b] + 1, max_ctx).

    Slice s covers [s*C, min((s+1)*C, L)) with C = cdiv(cdiv(L, NUM_SPLITS), BLOCK_T) * BLOCK_T.
    Writes acc[s, h, :] = sum_t exp2(x_t - m) v_t and ml[s, h] = (m, l = sum_t exp2(x_t - m)) with
    x_t = (q_h . k_t) * scale * log2(e), q and p cast to DOT_TY (the cache dtype) for tl.dot
    (PREC "ieee" for fp32 caches: no tf32 rounding);
    an empty slice writes the neutral (-inf, 0, 0). acc (B, NUM_SPLITS, n_head, HD), ml (B, NUM_SPLITS, n_head, 2).
    """
    g = tl.program_id(0)
    s = tl.program_id(1)
    b = tl.program_id(2)
    if BATCH:
        L = tl.minimum(tl.load(pos_ptr + b) + 1, max_ctx)
        kc_ptr, ks_ptr, vc_ptr, vs_ptr = slot_row(slot_ptr, b, kc_ptr, ks_ptr, vc_ptr, vs_ptr, s_kslot, s_ksslot,
                                                  s_vslot, s_vsslot)
    else:
        L = tl.minimum(tl.load(pos_ptr) + 1, max_ctx)
    q_ptr += b.to(tl.int64) * s_qb
    chunk = tl.cdiv(tl.cdiv(L, NUM_SPLITS), BLOCK_T) * BLOCK_T
    t_lo = s * chunk
    t_hi = tl.minimum(L, t_lo + chunk)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    heads = g * GROUP + offs_g
    gmask = offs_g < GROUP
    dmask = offs_d < HD
    q = tl.load(q_ptr + heads[:, None] * s_q + offs_d[None, :],
                mask=gmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
    q = (q * qk_scale).to(DOT_TY)                                   # (BLOCK_G, BLOCK_D)
    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), dtype=tl.float32)
    gg = g.to(tl.int64)
    for t in range(t_lo, t_hi, BLOCK_T):
        tt = t + offs_t
        tmask = tt < t_hi
        k = load_tile(kc_ptr + gg * s_k0, ks_ptr + gg * s_ks0, tt, tmask, s_k1, s_ks1, offs_d, dmask, K_KIND)
        v = load_tile(vc_ptr + gg * s_v0, vs_ptr + gg * s_vs0, tt, tmask, s_v1, s_vs1, offs_d, dmask, V_KIND)
        x = tl.dot(q, tl.trans(k.to(DOT_TY)), input_precision=PREC)  # (BLOCK_G, BLOCK_T) fp32
        x = tl.where(tmask[None, :], x, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(x - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_TY), v.to(DOT_TY), input_precision=PREC)
        m_i = m_new
    out_h = (b * NUM_SPLITS + s) * n_head + heads
    tl.store(acc_ptr + out_h[:, None] * HD + offs_d[None, :], acc,
             mask=gmask[:, None] & dmask[None, :])
    tl.store(ml_ptr + out_h * 2, m_i, mask=gmask)
    tl.store(ml_ptr + out_h * 2 + 1, l_i, mask=gmask)


@triton.jit
def _attn_merge_kernel(acc_ptr, ml_ptr, out_ptr, n_head, s_ob, s_o,
                       HD: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """Grid (n_head, B): out[b, h] = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) l_s, M = max_s m_s."""
    h = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    smask = offs_s < NUM_SPLITS
    acc_ptr += b * NUM_SPLITS * n_head * HD
    ml_ptr += b * NUM_SPLITS * n_head * 2
    out_ptr += b.to(tl.int64) * s_ob
    m = tl.load(ml_ptr + (offs_s * n_head + h) * 2, mask=smask, other=float("-inf"))
    l = tl.load(ml_ptr + (offs_s * n_head + h) * 2 + 1, mask=smask, other=0.0)
    acc = tl.load(acc_ptr + (offs_s[:, None] * n_head + h) * HD + offs_d[None, :],
                  mask=smask[:, None] & (offs_d < HD)[None, :], other=0.0)
    w = tl.exp2(m - tl.max(m, axis=0))                               # 0 for empty slices
    o = tl.sum(acc * w[:, None], axis=0) / tl.sum(l * w, axis=0)
    tl.store(out_ptr + h * s_o + offs_d, o.to(out_ptr.dtype.element_ty), mask=offs_d < HD)


# ---------------------------------------------------------------------------- launcher


def attention_decode(q: torch.Tensor, k_cache: CacheLayer | torch.Tensor, v_cache: CacheLayer | torch.Tensor,
                     pos: torch.Tensor, *, sm_scale: float | None = None, out: torch.Tensor | None = None,
                     num_splits: int | None = None, slots: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * sm_scale) v over cache rows [0, pos[0]] for one token; returns (n_head, hd).

    q (n_head, hd) any float dtype; caches: one layer each (`CacheLayer` of any cache type, or a
    plain (n_kv, max_ctx, hd) fp16/bf16/fp32 tensor) with n_head a multiple of n_kv; pos int32
    device tensor (1,). out defaults to q's dtype.
    With `slots` (B,) int32 (a batch of sequences): q (B, n_head, hd), pooled cache layers (n_slots,
    n_kv, max_ctx, ...), pos (B,); row b attends over rows [0, pos[b]] of slot slots[b]; -> (B, n_head, hd).
    """
    k_layer, v_layer = (c if isinstance(c, CacheLayer) else CacheLayer.of(c) for c in (k_cache, v_cache))
    batch = slots is not None
    n_kv, max_ctx = k_layer.data.shape[-3:-1]
    hd = k_layer.head_dim
    want = "(B, n_head, hd)" if batch else "(n_head, hd)"
    if q.dim() != 2 + batch or q.shape[-1] != hd or q.shape[-2] % n_kv or q.stride(-1) != 1:
        raise ValueError(f"q must be {want} with hd {hd} and n_head a multiple of {n_kv}, got {tuple(q.shape)}")
    check_layer(k_layer, "the K cache", hd, pooled=batch)
    check_layer(v_layer, "the V cache", hd, pooled=batch)
    if v_layer.data.shape[:-1] != k_layer.data.shape[:-1]:
        raise ValueError("the K and V caches must have the same slots, heads and length")
    rows = q.shape[0] if batch else 1
    check_rows(pos, slots, rows, q.device)
    n_head = q.shape[-2]
    if out is None:
        out = torch.empty_like(q)
    if out.shape != q.shape or out.stride(-1) != 1:
        raise ValueError(f"out must be {tuple(q.shape)} with unit last stride")
    q3, out3 = (q, out) if batch else (q.unsqueeze(0), out.unsqueeze(0))
    group = n_head // n_kv
    scale = (1.0 / math.sqrt(hd)) if sm_scale is None else sm_scale
    block_t, splits = attention_config(n_kv, max_ctx, num_sms(q.device), (k_layer.kind.name, v_layer.kind.name))
    splits = splits if num_splits is None else num_splits
    acc = torch.empty((rows, splits, n_head, hd), device=q.device, dtype=torch.float32)
    ml = torch.empty((rows, splits, n_head, 2), device=q.device, dtype=torch.float32)
    block_d = max(16, triton.next_power_of_2(hd))  # tl.dot needs operands at least 16 wide
    # dot operands: the float cache's own type (fp32: full precision), fp16 for block caches
    float_kind = k_layer.kind if not k_layer.kind.quantized else v_layer.kind
    dtype = float_kind.dtype if not float_kind.quantized else torch.float16
    kc, ks, s_k0, s_k1, s_ks0, s_ks1 = layer_args(k_layer)
    vc, vs, s_v0, s_v1, s_vs0, s_vs1 = layer_args(v_layer)
    _attn_split_kernel[(n_kv, splits, rows)](
        q3, kc, ks, vc, vs, pos, pos if slots is None else slots, acc, ml, scale * math.log2(math.e), n_head,
        max_ctx, q3.stride(0), q3.stride(1), s_k0, s_k1, s_ks0, s_ks1, s_v0, s_v1, s_vs0, s_vs1,
        *slot_strides(k_layer), *slot_strides(v_layer),
        GROUP=group, HD=hd, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_D=block_d,
        BLOCK_T=block_t, NUM_SPLITS=splits, DOT_TY=dot_dtype(dtype),
        PREC="ieee" if dtype == torch.float32 else "tf32", K_KIND=kind_of(k_layer), V_KIND=kind_of(v_layer),
        BATCH=batch, num_warps=ATTENTION_WARPS, num_stages=ATTENTION_STAGES)
    _attn_merge_kernel[(n_head, rows)](
        acc, ml, out3, n_head, out3.stride(0), out3.stride(1), HD=hd, NUM_SPLITS=splits,
        BLOCK_S=triton.next_power_of_2(splits), BLOCK_D=block_d, num_warps=MERGE_WARPS)
    return out
