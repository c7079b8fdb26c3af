"""Rotary position embedding fused with the KV-cache write (and optionally Qwen3's q/k norm).

The rotation is described by `gguflm.ops.Rope`; `gguflm.ops.qkv_heads` followed by
`CacheLayer.write` is its reference. Compiled without FMA contraction, so that the quantized
cache stores round every product as the reference does (the kernel is tiny next to the GEMVs).
"""

import math

import torch
import triton
import triton.language as tl

from gguflm.kv_cache import CacheLayer
from gguflm.ops import Rope

from .kv_blocks import check_layer, check_rows, kind_of, layer_args, slot_row, slot_strides, store_head
from .settings import ROPE_WARPS


# ---------------------------------------------------------------------------- kernel


@triton.jit
def _head(base, nw_ptr, e, emask, partner, sign, rot, cos, sin, eps, HD: tl.constexpr, HAS_NORM: tl.constexpr):
    """One head in natural order (BLOCK_D,) fp32: RMS-normalized when HAS_NORM, then rotated.

    Element e pairs with `partner` (its rotation partner); out[e] = x[e] cos + sign x[partner] sin
    on the rotated dims, x[e] on the pass-through ones.
    """
    x = tl.load(base + e, mask=emask, other=0.0).to(tl.float32)
    xp = tl.load(base + partner, mask=emask, other=0.0).to(tl.float32)
    if HAS_NORM:
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / HD + eps)
        x = x * rstd * tl.load(nw_ptr + e, mask=emask, other=0.0).to(tl.float32)
        xp = xp * rstd * tl.load(nw_ptr + partner, mask=emask, other=0.0).to(tl.float32)
    return tl.where(rot, x * cos + sign * (xp * sin), x)


@triton.jit
def _rope_cache_kernel(qkv_ptr, pos_ptr, slot_ptr, ff_ptr, qn_ptr, kn_ptr, q_ptr, kc_ptr, ks_ptr, vc_ptr, vs_ptr,
                       n_head, n_kv, max_ctx, s_qkv, s_q0, s_q1, s_kc0, s_kc1, s_ks0, s_ks1,
                       s_vc0, s_vc1, s_vs0, s_vs1, s_kcs, s_kss, s_vcs, s_vss, inv_pos_scale, log2_base, eps,
                       HD: tl.constexpr, ROT: tl.constexpr, BLOCK_D: tl.constexpr, NEOX: tl.constexpr,
                       HAS_FF: tl.constexpr, HAS_QN: tl.constexpr, HAS_KN: tl.constexpr,
                       K_KIND: tl.constexpr, V_KIND: tl.constexpr, BATCH: tl.constexpr):
    """Grid (M, n_head + n_kv). One sequence: token m sits at position pos[0] + m. BATCH: row m is a
    sequence of its own, at position pos[m] of cache slot slot[m] (slot strides s_kcs .. s_vss).

    qkv (M, (n_head + 2 n_kv) * HD): program h < n_head rotates q head h into q (M, n_head, HD);
    program n_head + j rotates k head j into the K cache at [j, pos] and stores v head j into the V
    cache at [j, pos], each in its cache's format (`kv_blocks.store_head`); positions >= max_ctx are
    not written.
    """
    m = tl.program_id(0)
    h = tl.program_id(1)
    if BATCH:
        pos = tl.load(pos_ptr + m)
        kc_ptr, ks_ptr, vc_ptr, vs_ptr = slot_row(slot_ptr, m, kc_ptr, ks_ptr, vc_ptr, vs_ptr, s_kcs, s_kss, s_vcs,
                                                  s_vss)
    else:
        pos = tl.load(pos_ptr) + m
    HALF: tl.constexpr = ROT // 2
    e = tl.arange(0, BLOCK_D)
    emask = e < HD
    rot = e < ROT
    if NEOX:  # (x[i], x[i + HALF])
        i = e % HALF
        partner = tl.where(e < HALF, e + HALF, e - HALF)
        sign = tl.where(e < HALF, -1.0, 1.0)
    else:  # adjacent pairs (x[2i], x[2i + 1])
        i = e // 2
        partner = e ^ 1
        sign = tl.where(e % 2 == 0, -1.0, 1.0)
    partner = tl.where(rot, partner, e)
    inv_freq = tl.exp2(i.to(tl.float32) * (-2.0 / ROT) * log2_base)
    if HAS_FF:
        inv_freq = inv_freq / tl.load(ff_ptr + i, mask=rot, other=1.0)
    theta = (pos.to(tl.float32) * inv_pos_scale) * inv_freq
    cos = tl.cos(theta)
    sin = tl.sin(theta)
    row = qkv_ptr + m.to(tl.int64) * s_qkv
    if h < n_head:
        x = _head(row + h * HD, qn_ptr, e, emask, partner, sign, rot, cos, sin, eps, HD, HAS_QN)
        tl.store(q_ptr + m * s_q0 + h * s_q1 + e, x.to(q_ptr.dtype.element_ty), mask=emask)
    else:
        j = h - n_head
        write = emask & (e * 0 + pos < max_ctx)
        p = pos.to(tl.int64)
        k = _head(row + h * HD, kn_ptr, e, emask, partner, sign, rot, cos, sin, eps, HD, HAS_KN)
        store_head(kc_ptr + j * s_kc0 + p * s_kc1, ks_ptr + j * s_ks0 + p * s_ks1, k, e, write, HD, BLOCK_D,
                   K_KIND)
        v = tl.load(row + (h + n_kv) * HD + e, mask=emask, other=0.0).to(tl.float32)
        store_head(vc_ptr + j * s_vc0 + p * s_vc1, vs_ptr + j * s_vs0 + p * s_vs1, v, e, write, HD, BLOCK_D,
                   V_KIND)


# ---------------------------------------------------------------------------- launcher


def rope_and_cache(qkv: torch.Tensor, pos: torch.Tensor, k_cache: CacheLayer | torch.Tensor,
                   v_cache: CacheLayer | torch.Tensor, rope: Rope, *, n_head: int,
                   q_out: torch.Tensor | None = None, q_norm: torch.Tensor | None = None,
                   k_norm: torch.Tensor | None = None, norm_eps: float = 1e-6,
                   slots: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate q and k of a fused qkv (N,) or (M, N) at positions pos[0] + m; write k, v to the caches.

    pos: int32 device tensor (1,). Caches: one layer each (`CacheLayer`, any cache type; a plain
    (n_kv, max_ctx, head_dim) float tensor is taken as one). q_norm/k_norm (head_dim,): per-head
    RMSNorm before rotation (Qwen3). Returns q (n_head, hd) or (M, n_head, hd): q_out, or by
    default the q part of qkv rotated in place.
    With `slots` (M,) int32 (a batch of sequences): the caches are pooled layers (n_slots, n_kv,
    max_ctx, ...) and row m is written at position pos[m] (pos is (M,)) of slot slots[m].
    """
    k_layer, v_layer = (c if isinstance(c, CacheLayer) else CacheLayer.of(c) for c in (k_cache, v_cache))
    hd = rope.head_dim
    check_layer(k_layer, "the K cache", hd, pooled=slots is not None)
    check_layer(v_layer, "the V cache", hd, pooled=slots is not None)
    n_kv, max_ctx = k_layer.data.shape[-3:-1]
    if v_layer.data.shape[:-1] != k_layer.data.shape[:-1]:
        raise ValueError("the K and V caches must have the same slots, heads and length")
    n_qkv = (n_head + 2 * n_kv) * hd
    if qkv.dim() not in (1, 2) or qkv.shape[-1] != n_qkv or qkv.stride(-1) != 1:
        raise ValueError(f"qkv must be ({n_qkv},) or (M, {n_qkv}) with unit last stride, "
                         f"got {tuple(qkv.shape)}")
    if slots is not None and qkv.dim() != 2:
        raise ValueError("a batch (slots given) needs qkv (M, N)")
    check_rows(pos, slots, qkv.shape[0], qkv.device)
    if rope.freq_factors is not None and rope.freq_factors.device != qkv.device:
        raise ValueError("rope freq_factors must be on qkv's device")
    for name, w in (("q_norm", q_norm), ("k_norm", k_norm)):
        if w is not None and (tuple(w.shape) != (hd,) or not w.is_contiguous()):
            raise ValueError(f"{name} must be contiguous ({hd},), got {tuple(w.shape)}")
    qkv2 = qkv if qkv.dim() == 2 else qkv.unsqueeze(0)
    m = qkv2.shape[0]
    q_shape = (m, n_head, hd) if qkv.dim() == 2 else (n_head, hd)
    if q_out is None:
        q_out = qkv2[:, : n_head * hd].view(m, n_head, hd)
        q_out = q_out if qkv.dim() == 2 else q_out[0]
    if tuple(q_out.shape) != q_shape or q_out.stride(-1) != 1:
        raise ValueError(f"q_out must be {q_shape} with unit last stride, got {tuple(q_out.shape)}")
    q3 = q_out if q_out.dim() == 3 else q_out.unsqueeze(0)
    kc, ks, s_kc0, s_kc1, s_ks0, s_ks1 = layer_args(k_layer)
    vc, vs, s_vc0, s_vc1, s_vs0, s_vs1 = layer_args(v_layer)
    _rope_cache_kernel[(m, n_head + n_kv)](
        qkv2, pos, pos if slots is None else slots, kc if rope.freq_factors is None else rope.freq_factors,
        kc if q_norm is None else q_norm, kc if k_norm is None else k_norm,
        q3, kc, ks, vc, vs, n_head, n_kv, max_ctx, qkv2.stride(0), q3.stride(0), q3.stride(1),
        s_kc0, s_kc1, s_ks0, s_ks1, s_vc0, s_vc1, s_vs0, s_vs1, *slot_strides(k_layer), *slot_strides(v_layer),
        1.0 / rope.pos_scale, math.log2(rope.base), float(norm_eps),
        HD=hd, ROT=rope.rot_dim, BLOCK_D=max(triton.next_power_of_2(hd), 32 if k_layer.kind.quantized
                                             or v_layer.kind.quantized else 1),
        NEOX=rope.mode == "neox", HAS_FF=rope.freq_factors is not None,
        HAS_QN=q_norm is not None, HAS_KN=k_norm is not None, K_KIND=kind_of(k_layer), V_KIND=kind_of(v_layer),
        BATCH=slots is not None, num_warps=ROPE_WARPS, enable_fp_fusion=False)
    return q_out
