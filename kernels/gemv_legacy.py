"""Decode GEMV over the 4/5-bit 32-blocks (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL), dequantized in registers.

Layout (gguflm/quants/legacy.py): qs uint8 (N, K/2), d fp16 (N, K/32) [, m fp16] [, qh int32].
Per block b of row n, with x's block halves xl = x[32b : 32b+16], xh = x[32b+16 : 32b+32]:
  dot = sum_j lo[j] * xl[j] + hi[j] * xh[j]          (lo, hi: the codes, or IQ4_NL's table values)
  g  += d * (dot - OFFSET * sum(x_b))  or  d * dot + m * sum(x_b)   (fp32)
so the offset and the minimum cost one multiply-add per block, not per weight. The split-K pass and
the epilogues are gemv.py's.
"""

import torch
import triton
import triton.language as tl

from gguflm.quants import PackedWeight

from .gemv import GemvCall, GemvFamily, _epilogue, register_family
from .nibbles import NIBBLE_FORMATS, block_values


@triton.jit
def _load(ptrs, mask, EVEN_K: tl.constexpr):
    """A weight-plane load; weights are read once per token: evict_first keeps them from pushing x out of L2."""
    if EVEN_K:
        return tl.load(ptrs, eviction_policy="evict_first")
    return tl.load(ptrs, mask=mask, other=0, eviction_policy="evict_first")


@triton.jit
def _block_dots(q_rows, s_rows, d_ptr, m_ptr, h_ptr, kq, kb, xl, xh, xs, nb_hi,
                FIFTH: tl.constexpr, NL: tl.constexpr, HAS_MIN: tl.constexpr, OFFSET: tl.constexpr,
                EVEN_K: tl.constexpr):
    """(BLOCK_N, NB) block dot products: q_rows (BLOCK_N, 1, 1) nibble row pointers, s_rows (BLOCK_N, 1)
    offsets of the rows' block planes; kq (NB, 16) byte offsets, kb (NB,) block indices; xl, xh (NB, 16)."""
    j = tl.arange(0, 16)[None, None, :]
    bmask = (kb < nb_hi)[None, :]
    q = _load(q_rows + kq[None, :, :], bmask[:, :, None], EVEN_K)        # (BN, NB, 16) uint8
    d = _load(d_ptr + s_rows + kb[None, :], bmask, EVEN_K)               # (BN, NB) fp16
    h = q
    if FIFTH:
        h = _load(h_ptr + s_rows + kb[None, :], bmask, EVEN_K)[:, :, None]  # (BN, NB, 1) int32
    lo, hi = block_values(q, h, j, FIFTH, NL)
    dot = tl.sum(lo * xl[None, :, :] + hi * xh[None, :, :], axis=2)                   # (BN, NB)
    if OFFSET != 0:
        dot = dot - OFFSET * xs[None, :]
    part = dot * d.to(tl.float32)
    if HAS_MIN:
        m = _load(m_ptr + s_rows + kb[None, :], bmask, EVEN_K)
        part += m.to(tl.float32) * xs[None, :]
    return part


@triton.jit
def _dot_rows(x_row, q_ptr, d_ptr, m_ptr, h_ptr, rows, rows2, stride_qn, stride_dn, k_lo, k_hi,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FIFTH: tl.constexpr, NL: tl.constexpr,
              HAS_MIN: tl.constexpr, OFFSET: tl.constexpr, EVEN_K: tl.constexpr, TWO: tl.constexpr):
    """acc[i] = sum_{k in [k_lo, k_hi)} x[k] * W[rows[i], k] in fp32 (and for rows2 if TWO); one x tile serves both."""
    NB: tl.constexpr = BLOCK_K // 32
    offs_b = tl.arange(0, NB)
    offs_x = offs_b[:, None] * 32 + tl.arange(0, 16)[None, :]    # (NB, 16): elements of the first halves
    offs_q = offs_b[:, None] * 16 + tl.arange(0, 16)[None, :]    # (NB, 16): their bytes
    q1 = q_ptr + rows[:, None, None] * stride_qn                  # (BLOCK_N, 1, 1)
    q2 = q_ptr + rows2[:, None, None] * stride_qn
    s1 = rows[:, None] * stride_dn                                # (BLOCK_N, 1)
    s2 = rows2[:, None] * stride_dn
    nb_hi = k_hi // 32
    acc = tl.zeros((BLOCK_N, NB), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, NB), dtype=tl.float32)
    for k in range(k_lo, k_hi, BLOCK_K):
        kx = k + offs_x
        kq = tl.multiple_of(k // 2, 16) + offs_q   # k is a multiple of BLOCK_K: 16-byte aligned runs
        kb = k // 32 + offs_b
        if EVEN_K:
            xl = tl.load(x_row + kx).to(tl.float32)
            xh = tl.load(x_row + kx + 16).to(tl.float32)
        else:
            xl = tl.load(x_row + kx, mask=kx < k_hi, other=0.0).to(tl.float32)
            xh = tl.load(x_row + kx + 16, mask=kx < k_hi, other=0.0).to(tl.float32)
        xs = tl.sum(xl + xh, axis=1)                              # (NB,) block sums of x
        acc += _block_dots(q1, s1, d_ptr, m_ptr, h_ptr, kq, kb, xl, xh, xs, nb_hi,
                           FIFTH, NL, HAS_MIN, OFFSET, EVEN_K)
        if TWO:
            acc2 += _block_dots(q2, s2, d_ptr, m_ptr, h_ptr, kq, kb, xl, xh, xs, nb_hi,
                                FIFTH, NL, HAS_MIN, OFFSET, EVEN_K)
    return tl.sum(acc, axis=1), tl.sum(acc2, axis=1)


@triton.jit
def _nibble_gemv_kernel(x_ptr, q_ptr, d_ptr, m_ptr, h_ptr, bias_ptr, res_ptr, out_ptr, part_ptr,
                        M, N_OUT, K, stride_xm, stride_qn, stride_dn, stride_rm, stride_om, k_per_split,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FIFTH: tl.constexpr, NL: tl.constexpr,
                        HAS_MIN: tl.constexpr, OFFSET: tl.constexpr, EVEN_K: tl.constexpr, GLU: tl.constexpr,
                        SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
    """Grid (M, cdiv(N_OUT, BLOCK_N), SPLIT_K); x (M, K); qs (N, K/2), d/m/qh (N, K/32) sharing stride_dn;
    N = N_OUT or 2 * N_OUT (GLU: gate rows n and up rows N_OUT + n in one program).

    out[m, n] = g + bias[n] + residual[m, n], or silu(g) * u with GLU; SPLIT writes fp32 partial sums
    part[s, m, :] that gemv.py's _reduce_kernel finishes.
    """
    m = tl.program_id(0)
    pid_n = tl.program_id(1)
    s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N_OUT
    rows = tl.minimum(offs_n, N_OUT - 1).to(tl.int64)   # clamped: loads need no row mask
    k_lo = s * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    g, u = _dot_rows(x_ptr + m * stride_xm, q_ptr, d_ptr, m_ptr, h_ptr, rows, rows + N_OUT, stride_qn,
                     stride_dn, k_lo, k_hi, BLOCK_N, BLOCK_K, FIFTH, NL, HAS_MIN, OFFSET, EVEN_K, GLU)
    if SPLIT:
        width = 2 * N_OUT if GLU else N_OUT
        base = part_ptr + (s * M + m) * width
        tl.store(base + offs_n, g, mask=nmask)
        if GLU:
            tl.store(base + N_OUT + offs_n, u, mask=nmask)
    else:
        _epilogue(g, u, m, offs_n, nmask, bias_ptr, res_ptr, out_ptr, stride_rm, stride_om,
                  GLU, HAS_BIAS, HAS_RES)


def nibble_planes(w: PackedWeight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qs, d, m, qh) of a 4/5-bit weight, checked; an absent plane is d (never read)."""
    spec = NIBBLE_FORMATS[w.fmt.kernel]
    qs, d, *rest = w.parts
    n, k = w.shape
    m = rest.pop(0) if spec["HAS_MIN"] else d
    qh = rest.pop(0) if spec["FIFTH"] else d
    if qs.dtype != torch.uint8 or tuple(qs.shape) != (n, k // 2) or qs.stride(1) != 1 or k % 32:
        raise ValueError(f"{w.fmt.name} qs must be uint8 ({n}, {k // 2}) with K % 32 == 0, got "
                         f"{qs.dtype} {tuple(qs.shape)}")
    for name, plane, dtype in (("d", d, torch.float16), ("m", m, torch.float16), ("qh", qh, torch.int32)):
        if plane is d and name != "d":
            continue
        if plane.dtype != dtype or tuple(plane.shape) != (n, k // 32) or plane.stride() != d.stride():
            raise ValueError(f"{w.fmt.name} {name} must be {dtype} ({n}, {k // 32}) strided as d, got "
                             f"{plane.dtype} {tuple(plane.shape)}")
    if d.stride(1) != 1:
        raise ValueError(f"{w.fmt.name} d must have unit stride along K")
    return qs, d, m, qh


def _launch_nibbles(call: GemvCall, weight: PackedWeight) -> None:
    qs, d, m, qh = nibble_planes(weight)
    x = call.x
    _nibble_gemv_kernel[call.grid](
        x, qs, d, m, qh, call.bias, call.res, call.out, call.part,
        x.shape[0], call.n_out, x.shape[1], x.stride(0), qs.stride(0), d.stride(0), call.stride_rm,
        call.out.stride(0), call.k_per_split, **NIBBLE_FORMATS[weight.fmt.kernel], **call.flags)


register_family(tuple(NIBBLE_FORMATS), GemvFamily(_launch_nibbles, lambda w: 0.5))  # tiles sized on the nibbles
