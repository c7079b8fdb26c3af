"""Prefill GEMM y = x @ W^T over a packed weight: Q8_0 and the 4/5-bit 32-blocks dequantized tile
by tile in SRAM, dense weights through torch (cuBLAS).

Prefill is compute-bound: each (BLOCK_K, BLOCK_N) weight tile is loaded as int8 (or nibbles), scaled
by its fp16 block scales in registers, cast to x's dtype and fed to tl.dot (tensor cores), fp32
accumulate. A nibble tile unpacks to the first and second halves of its blocks, so it takes two
tl.dot of depth BLOCK_K/2 against x's matching columns instead of an interleave of the halves.

When to measure dequantize + cuBLAS instead: for long prompts (M in the thousands) the
one-off cost of dequantizing a layer's weights into a reused fp16 buffer (read 1.06 B/weight,
write 2 B) is small next to the GEMM, and cuBLAS' Hopper (wgmma, TMA) kernels can beat a
tl.dot kernel that must convert int8 -> fp16 in its mainloop; for short prompts (M <= ~256)
the GEMM is still weight-bandwidth-bound and this fused kernel reads 1.06 B/weight, not 3+2.
scripts/bench_gemv.py is the place to add that comparison when it is measured.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from gguflm.quants import PackedWeight, StackedWeight

from . import gemm_kquants
from .gemv_legacy import nibble_planes
from .nibbles import NIBBLE_FORMATS, block_values
from .settings import dot_dtype, gemm_config

# ---------------------------------------------------------------------------- kernel


@triton.jit
def _grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's (row tile, column tile) in grouped order: GROUP_M row tiles run over each column
    tile together, so its weight tile is read from DRAM once and from L2 by the others."""
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    return pid_m, pid_n


@triton.jit
def _q8_gemm_kernel(x_ptr, qs_ptr, d_ptr, out_ptr, M, N, K,
                    s_xm, s_qn, s_dn, s_om,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    GROUP_M: tl.constexpr, DOT_TY: tl.constexpr):
    """x (M, K) fp16/bf16; qs int8 (N, K); d fp16 (N, K/32); out (M, N) = x @ (d * qs)^T.

    1-D grid in grouped order (GROUP_M row-tiles share each weight column-tile in L2).
    K % BLOCK_K == 0 (BLOCK_K is 32 or 64). The weight tile is loaded as (BLOCK_K/32, 32, BLOCK_N)
    int8 so one d per (32-block, n) scales it, then reshaped to (BLOCK_K, BLOCK_N) for tl.dot.
    """
    pid_m, pid_n = _grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    NB: tl.constexpr = BLOCK_K // 32
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_b = tl.arange(0, NB)
    rows_m = tl.minimum(offs_m, M - 1).to(tl.int64)       # clamped: loads need no M/N masks
    rows_n = tl.minimum(offs_n, N - 1).to(tl.int64)
    x_tile = x_ptr + rows_m[:, None] * s_xm + offs_k[None, :]                        # (BM, BK)
    q_tile = (qs_ptr + rows_n[None, None, :] * s_qn
              + (offs_b[:, None, None] * 32 + tl.arange(0, 32)[None, :, None]))     # (NB, 32, BN)
    d_tile = d_ptr + rows_n[None, :] * s_dn + offs_b[:, None]                         # (NB, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(x_tile + k)
        q = tl.load(q_tile + k)
        dv = tl.load(d_tile + k // 32)
        w = q.to(tl.float32) * dv.to(tl.float32)[:, None, :]
        w = tl.reshape(w, (BLOCK_K, BLOCK_N)).to(DOT_TY)
        acc = tl.dot(a.to(DOT_TY), w, acc)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * s_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _nibble_gemm_kernel(x_ptr, q_ptr, d_ptr, m_ptr, h_ptr, out_ptr, M, N, K,
                        s_xm, s_qn, s_dn, s_om,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr, DOT_TY: tl.constexpr, FIFTH: tl.constexpr, NL: tl.constexpr,
                        HAS_MIN: tl.constexpr, OFFSET: tl.constexpr):
    """x (M, K) fp16/bf16; qs uint8 (N, K/2), d/m fp16, qh int32 (N, K/32) sharing s_dn; out (M, N) = x @ W^T.

    Grouped 1-D grid as _q8_gemm_kernel's; K % BLOCK_K == 0. The (BLOCK_K/2) bytes of a row's tile
    load as (NB, 16, BLOCK_N), unpack to (lo, hi) = elements 32b + j and 32b + 16 + j, are scaled per
    (block, n) and meet x's columns 32b + j and 32b + 16 + j in two tl.dot.
    """
    pid_m, pid_n = _grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    NB: tl.constexpr = BLOCK_K // 32
    HALF: tl.constexpr = BLOCK_K // 2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, HALF)
    offs_b = tl.arange(0, NB)
    j = tl.arange(0, 16)
    rows_m = tl.minimum(offs_m, M - 1).to(tl.int64)       # clamped: loads need no M/N masks
    rows_n = tl.minimum(offs_n, N - 1).to(tl.int64)
    x_lo = x_ptr + rows_m[:, None] * s_xm + ((offs_h // 16) * 32 + offs_h % 16)[None, :]    # (BM, BK/2)
    q_tile = q_ptr + rows_n[None, None, :] * s_qn + (offs_b[:, None, None] * 16 + j[None, :, None])  # (NB, 16, BN)
    s_tile = rows_n[None, :] * s_dn + offs_b[:, None]                                          # (NB, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a_lo = tl.load(x_lo + k).to(DOT_TY)
        a_hi = tl.load(x_lo + k + 16).to(DOT_TY)
        q = tl.load(q_tile + k // 2)
        kb = k // 32
        d = tl.load(d_ptr + s_tile + kb).to(tl.float32)[:, None, :]                          # (NB, 1, BN)
        h = q
        if FIFTH:
            h = tl.load(h_ptr + s_tile + kb)[:, None, :]
        lo, hi = block_values(q, h, j[None, :, None], FIFTH, NL)                              # (NB, 16, BN)
        if HAS_MIN:
            mv = tl.load(m_ptr + s_tile + kb).to(tl.float32)[:, None, :]
            lo = d * lo + mv
            hi = d * hi + mv
        else:
            lo = d * (lo - OFFSET)
            hi = d * (hi - OFFSET)
        acc = tl.dot(a_lo, tl.reshape(lo, (HALF, BLOCK_N)).to(DOT_TY), acc)
        acc = tl.dot(a_hi, tl.reshape(hi, (HALF, BLOCK_N)).to(DOT_TY), acc)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * s_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------- launcher


def q8_gemm(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, *,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W^T with W = Q8_0 (qs int8 (N, K), d fp16 (N, K/32)).

    x fp16/bf16 (unit stride on K); fp32 accumulate; out defaults to x's dtype.
    """
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16) or x.stride(1) != 1:
        raise ValueError(f"x must be (M, K) fp16/bf16 with unit stride on K, got {x.dtype} {tuple(x.shape)}")
    M, K = x.shape
    if qs.dim() != 2 or qs.dtype != torch.int8 or qs.shape[1] != K or K % 32 or qs.stride(1) != 1:
        raise ValueError(f"qs must be int8 (N, {K}) with K % 32 == 0, got {qs.dtype} {tuple(qs.shape)}")
    N = qs.shape[0]
    if d.dtype != torch.float16 or tuple(d.shape) != (N, K // 32) or d.stride(1) != 1:
        raise ValueError(f"d must be fp16 ({N}, {K // 32}), got {d.dtype} {tuple(d.shape)}")
    if out is None:
        out = torch.empty((M, N), device=x.device, dtype=x.dtype)
    if tuple(out.shape) != (M, N) or out.stride(1) != 1:
        raise ValueError(f"out must be ({M}, {N}) with unit last stride, got {tuple(out.shape)}")
    cfg = gemm_config(M, N, K)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _q8_gemm_kernel[grid](x, qs, d, out, M, N, K, x.stride(0), qs.stride(0), d.stride(0),
                          out.stride(0), DOT_TY=dot_dtype(x.dtype), **cfg)
    return out


def nibble_gemm(x: torch.Tensor, w: PackedWeight, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W^T for a 4/5-bit 32-block weight (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL).

    x fp16/bf16 (unit stride on K); fp32 accumulate; out defaults to x's dtype.
    """
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16) or x.stride(1) != 1:
        raise ValueError(f"x must be (M, K) fp16/bf16 with unit stride on K, got {x.dtype} {tuple(x.shape)}")
    qs, d, m, qh = nibble_planes(w)
    M, K = x.shape
    if w.k != K:
        raise ValueError(f"weight must be (N, {K}), got {tuple(w.shape)}")
    N = qs.shape[0]
    if out is None:
        out = torch.empty((M, N), device=x.device, dtype=x.dtype)
    if tuple(out.shape) != (M, N) or out.stride(1) != 1:
        raise ValueError(f"out must be ({M}, {N}) with unit last stride, got {tuple(out.shape)}")
    cfg = gemm_config(M, N, K)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _nibble_gemm_kernel[grid](x, qs, d, m, qh, out, M, N, K, x.stride(0), qs.stride(0), d.stride(0),
                              out.stride(0), DOT_TY=dot_dtype(x.dtype), **NIBBLE_FORMATS[w.fmt.kernel], **cfg)
    return out


def gemm(x: torch.Tensor, w: PackedWeight | StackedWeight, act_dtype: torch.dtype) -> torch.Tensor:
    """y (M, N) fp32 = x (M, K) @ W^T for any supported format.

    Q8_0 and the 4/5-bit blocks: x rounded to act_dtype (fp16/bf16) for tensor cores, weight tiles
    dequantized in SRAM;
    dense weights: x in the weight's own dtype, through torch (cuBLAS); superblock formats: see
    gemm_kquants; a StackedWeight: one product per piece.
    """
    if isinstance(w, StackedWeight):  # mixed formats: one product per block of rows
        return torch.cat([gemm(x, piece, act_dtype) for piece in w.pieces], dim=1)
    if w.fmt.kernel in gemm_kquants.FORMATS:
        return gemm_kquants.gemm(x, w, act_dtype)
    if w.fmt.kernel == "q8_0":
        out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32, device=x.device)
        return q8_gemm(x.to(act_dtype), *w.parts, out=out)
    if w.fmt.kernel in NIBBLE_FORMATS:
        out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32, device=x.device)
        return nibble_gemm(x.to(act_dtype), w, out=out)
    if w.fmt.kernel != "dense":
        raise ValueError(f"the prefill GEMM has no kernel for {w.fmt.name} weights")
    return F.linear(x.to(w.parts[0].dtype), w.parts[0]).float()
