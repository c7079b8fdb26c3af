"""Rotary position embedding fused with the KV-cache write (and optionally Qwen3's q/k norm).

The rotation is described by `gguflm.ops.Rope`; `gguflm.ops.qkv_heads` + `write_cache` is its reference.
"""

import math

import torch
import triton
import triton.language as tl

from gguflm.ops import Rope

from .settings import ROPE_WARPS


# ---------------------------------------------------------------------------- kernel


@triton.jit
def _load_head(base, idx1, idx2, p, imask, pmask, nw_ptr, eps, HD: tl.constexpr,
               HAS_NORM: tl.constexpr, HAS_PASS: tl.constexpr):
    """One head as (rotation pair halves x1, x2, pass-through xp), RMS-normalized if HAS_NORM."""
    x1 = tl.load(base + idx1, mask=imask, other=0.0).to(tl.float32)
    x2 = tl.load(base + idx2, mask=imask, other=0.0).to(tl.float32)
    xp = tl.load(base + p, mask=pmask, other=0.0).to(tl.float32)
    if HAS_NORM:
        ss = tl.sum(x1 * x1, axis=0) + tl.sum(x2 * x2, axis=0)
        if HAS_PASS:
            ss += tl.sum(xp * xp, axis=0)
        rstd = 1.0 / tl.sqrt(ss / HD + eps)
        x1 = x1 * rstd * tl.load(nw_ptr + idx1, mask=imask, other=0.0).to(tl.float32)
        x2 = x2 * rstd * tl.load(nw_ptr + idx2, mask=imask, other=0.0).to(tl.float32)
        xp = xp * rstd * tl.load(nw_ptr + p, mask=pmask, other=0.0).to(tl.float32)
    return x1, x2, xp


@triton.jit
def _store_head(base, x1, x2, xp, cos, sin, idx1, idx2, p, imask, pmask,
                HAS_PASS: tl.constexpr):
    ty = base.dtype.element_ty
    tl.store(base + idx1, (x1 * cos - x2 * sin).to(ty), mask=imask)
    tl.store(base + idx2, (x2 * cos + x1 * sin).to(ty), mask=imask)
    if HAS_PASS:
        tl.store(base + p, xp.to(ty), mask=pmask)


@triton.jit
def _rope_cache_kernel(qkv_ptr, pos_ptr, ff_ptr, qn_ptr, kn_ptr, q_ptr, kc_ptr, vc_ptr,
                       n_head, n_kv, max_ctx, s_qkv, s_q0, s_q1, s_kc0, s_kc1, s_vc0, s_vc1,
                       inv_pos_scale, log2_base, eps,
                       HD: tl.constexpr, ROT: tl.constexpr, BLOCK_HALF: tl.constexpr,
                       BLOCK_PASS: tl.constexpr, BLOCK_D: tl.constexpr, NEOX: tl.constexpr,
                       HAS_FF: tl.constexpr, HAS_QN: tl.constexpr, HAS_KN: tl.constexpr):
    """Grid (M, n_head + n_kv); token m sits at position pos[0] + m.

    qkv (M, (n_head + 2 n_kv) * HD): program h < n_head rotates q head h into q (M, n_head, HD);
    program n_head + j rotates k head j into k_cache[j, pos] and copies v head j to v_cache[j, pos]
    (caches (n_kv, max_ctx, HD); positions >= max_ctx are not written).
    """
    m = tl.program_id(0)
    h = tl.program_id(1)
    pos = tl.load(pos_ptr) + m
    HALF: tl.constexpr = ROT // 2
    HAS_PASS: tl.constexpr = ROT < HD
    i = tl.arange(0, BLOCK_HALF)
    imask = i < HALF
    if NEOX:
        idx1 = i
        idx2 = i + HALF
    else:
        idx1 = 2 * i
        idx2 = 2 * i + 1
    p = ROT + tl.arange(0, BLOCK_PASS)
    pmask = p < HD
    inv_freq = tl.exp2(i.to(tl.float32) * (-2.0 / ROT) * log2_base)
    if HAS_FF:
        inv_freq = inv_freq / tl.load(ff_ptr + i, mask=imask, other=1.0)
    theta = (pos.to(tl.float32) * inv_pos_scale) * inv_freq
    cos = tl.cos(theta)
    sin = tl.sin(theta)
    row = qkv_ptr + m.to(tl.int64) * s_qkv
    if h < n_head:
        x1, x2, xp = _load_head(row + h * HD, idx1, idx2, p, imask, pmask, qn_ptr, eps,
                                HD, HAS_QN, HAS_PASS)
        _store_head(q_ptr + m * s_q0 + h * s_q1, x1, x2, xp, cos, sin, idx1, idx2, p,
                    imask, pmask, HAS_PASS)
    else:
        j = h - n_head
        x1, x2, xp = _load_head(row + h * HD, idx1, idx2, p, imask, pmask, kn_ptr, eps,
                                HD, HAS_KN, HAS_PASS)
        _store_head(kc_ptr + j * s_kc0 + pos.to(tl.int64) * s_kc1, x1, x2, xp, cos, sin,
                    idx1, idx2, p, imask & (i * 0 + pos < max_ctx),
                    pmask & (p * 0 + pos < max_ctx), HAS_PASS)
        c = tl.arange(0, BLOCK_D)
        v = tl.load(row + (h + n_kv) * HD + c, mask=c < HD, other=0.0)
        tl.store(vc_ptr + j * s_vc0 + pos.to(tl.int64) * s_vc1 + c,
                 v.to(vc_ptr.dtype.element_ty), mask=(c < HD) & (c * 0 + pos < max_ctx))


# ---------------------------------------------------------------------------- launcher


def rope_and_cache(qkv: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, rope: Rope, *, n_head: int,
                   q_out: torch.Tensor | None = None, q_norm: torch.Tensor | None = None,
                   k_norm: torch.Tensor | None = None, norm_eps: float = 1e-6) -> torch.Tensor:
    """Rotate q and k of a fused qkv (N,) or (M, N) at positions pos[0] + m; write k, v to the caches.

    pos: int32 device tensor (1,). Caches (n_kv, max_ctx, head_dim). q_norm/k_norm (head_dim,):
    per-head RMSNorm before rotation (Qwen3). Returns q (n_head, hd) or (M, n_head, hd): q_out,
    or by default the q part of qkv rotated in place.
    """
    n_kv, max_ctx, hd = k_cache.shape
    if hd != rope.head_dim or v_cache.shape != k_cache.shape:
        raise ValueError(f"caches must both be (n_kv, max_ctx, {rope.head_dim}), got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if k_cache.stride(2) != 1 or v_cache.stride(2) != 1:
        raise ValueError("caches need unit stride on head_dim")
    n_qkv = (n_head + 2 * n_kv) * hd
    if qkv.dim() not in (1, 2) or qkv.shape[-1] != n_qkv or qkv.stride(-1) != 1:
        raise ValueError(f"qkv must be ({n_qkv},) or (M, {n_qkv}) with unit last stride, "
                         f"got {tuple(qkv.shape)}")
    if pos.dtype != torch.int32 or pos.numel() != 1 or pos.device != qkv.device:
        raise ValueError("pos must be a one-element int32 tensor on qkv's device")
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
    rot = rope.rot_dim
    dummy = k_cache
    _rope_cache_kernel[(m, n_head + n_kv)](
        qkv2, pos, dummy if rope.freq_factors is None else rope.freq_factors,
        dummy if q_norm is None else q_norm, dummy if k_norm is None else k_norm,
        q3, k_cache, v_cache, n_head, n_kv, max_ctx, qkv2.stride(0), q3.stride(0), q3.stride(1),
        k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        1.0 / rope.pos_scale, math.log2(rope.base), float(norm_eps),
        HD=hd, ROT=rot, BLOCK_HALF=triton.next_power_of_2(rot // 2),
        BLOCK_PASS=max(1, triton.next_power_of_2(hd - rot)), BLOCK_D=triton.next_power_of_2(hd),
        NEOX=rope.mode == "neox", HAS_FF=rope.freq_factors is not None,
        HAS_QN=q_norm is not None, HAS_KN=k_norm is not None, num_warps=ROPE_WARPS)
    return q_out
