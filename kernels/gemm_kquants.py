"""Prefill over the superblock formats: the weight dequantized by a Triton kernel into an fp16/bf16
buffer, then cuBLAS (torch's matmul) for the product.

Prefill is compute-bound; dequantizing costs one read of the packed weight (0.3-0.8 B/weight) and one
2-byte write, small next to a GEMM of a few hundred prompt rows, and cuBLAS' Hopper kernels then
run at full tensor-core rate. The buffer is one weight's worth, taken from torch's caching allocator
and so reused layer after layer. The unpacking is the GEMV's own (`gemv_kquants._unpack`).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from gguflm.quants import PackedWeight

from .gemv_kquants import FORMATS, _offsets, _unpack, geometry, iq4_table, planes

__all__ = ["FORMATS", "dequantize", "gemm"]

DEQUANT_ROWS = 16  # rows per program of the dequantization kernel


@triton.jit
def _kq_dequant_kernel(p0, p1, p2, p3, tab_ptr, out_ptr, N, s0, s1, s2, s3, s_on,
                       FMT: tl.constexpr, BLOCK_N: tl.constexpr, R: tl.constexpr, L: tl.constexpr,
                       SB: tl.constexpr):
    """Grid (cdiv(N, BLOCK_N), K / (256*SB)): out[n, k] = W[n, k] (= s*q - m) for SB superblocks of BLOCK_N rows."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = (offs_n < N)[:, None, None]
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    sb0 = tl.program_id(1) * SB
    qa, qb, sa, sb, ma, mb = _unpack(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows, sb0, FMT, R, L)
    oa, ob = _offsets(FMT, R, L)
    base = out_ptr + rows[:, None, None] * s_on + sb0 * 256
    ty = out_ptr.dtype.element_ty
    tl.store(base + oa[None, :, :], (qa * sa[:, :, None] - ma[:, :, None]).to(ty), mask=nmask)
    tl.store(base + ob[None, :, :], (qb * sb[:, :, None] - mb[:, :, None]).to(ty), mask=nmask)


def dequantize(w: PackedWeight, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """W (N, K) in `dtype` (fp16/bf16/fp32) from a superblock format's planes, on their device."""
    kernel = w.fmt.kernel
    n, k = w.shape
    if out is None:
        out = torch.empty((n, k), dtype=dtype, device=w.device)
    if tuple(out.shape) != (n, k) or out.stride(1) != 1:
        raise ValueError(f"out must be ({n}, {k}) with unit last stride, got {tuple(out.shape)}")
    sb = 2 if (k // 256) % 2 == 0 else 1
    r, l = geometry(kernel, sb)
    p = planes(w)
    tab = iq4_table(w.device) if kernel == "iq4_xs" else out
    grid = (triton.cdiv(n, DEQUANT_ROWS), k // (256 * sb))
    _kq_dequant_kernel[grid](*p, tab, out, n, *(t.stride(0) for t in p), out.stride(0),
                             FMT=FORMATS[kernel], BLOCK_N=DEQUANT_ROWS, R=r, L=l, SB=sb, num_warps=4)
    return out


def gemm(x: torch.Tensor, w: PackedWeight, act_dtype: torch.dtype) -> torch.Tensor:
    """y (M, N) fp32 = x (M, K) @ W^T: W dequantized to act_dtype, x rounded to it, fp32 accumulate."""
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (M, {w.shape[1]}), got {tuple(x.shape)}")
    if x.device.type != "cuda":  # the interpreter (tests): fp32 products of the same dequantized weight
        return F.linear(x.float(), dequantize(w, torch.float32))
    return F.linear(x.to(act_dtype), dequantize(w, act_dtype)).float()
