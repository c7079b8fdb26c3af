"""Decode GEMV y = x @ W^T over a packed weight, dequantized in registers, with fused epilogues.

Formats plug in by family: a family registers a launcher for its formats' `kernel` names
(`register_family`), which launches its own kernel over one `GemvCall`; this module checks the
arguments, picks the tiles, runs the deterministic split-K reduction and owns the shared epilogue.
Families here: dense W (N, K) fp16/bf16/fp32 and q8_0 (qs int8 (N, K), d fp16 (N, K/32),
W[n, k] = d[n, k//32] * qs[n, k]); gemv_legacy.py: the 4/5-bit 32-blocks.
Nothing is written back: each weight byte is read once per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import triton
import triton.language as tl

from gguflm.quants import PackedWeight, QuantFormat

from .settings import GemvConfig, gemv_settings, reduce_block

# kernel name of a format -> the LAYOUT constexpr the dense/q8_0 kernel branches on
LAYOUTS = {"dense": 0, "q8_0": 1}

# ---------------------------------------------------------------------------- kernels


@triton.jit
def _w_block(w_rows, d_rows, kk, kb, xv, k_hi, LAYOUT: tl.constexpr, EVEN_K: tl.constexpr):
    """(BLOCK_N, NB) block dot products sum_j W[n, 32b + j] * x[32b + j] (Q8_0: scaled by d[n, b]).

    Weights are read once per token: evict_first keeps them from pushing x out of L2.
    """
    if EVEN_K:
        w = tl.load(w_rows + kk[None, :, :], eviction_policy="evict_first")
    else:
        w = tl.load(w_rows + kk[None, :, :], mask=(kk < k_hi)[None, :, :], other=0,
                    eviction_policy="evict_first")
    if LAYOUT == 1:  # Q8_0 scales, issued beside the weight load, not after the reduction: one round-trip
        if EVEN_K:
            dv = tl.load(d_rows + kb[None, :], eviction_policy="evict_first")
        else:
            dv = tl.load(d_rows + kb[None, :], mask=(kb < k_hi // 32)[None, :], other=0.0,
                         eviction_policy="evict_first")
    part = tl.sum(w.to(tl.float32) * xv[None, :, :], axis=2)
    if LAYOUT == 1:
        part = part * dv.to(tl.float32)
    return part


@triton.jit
def _dot_rows(x_row, w_ptr, d_ptr, rows, rows2, stride_wn, stride_dn, k_lo, k_hi,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LAYOUT: tl.constexpr,
              EVEN_K: tl.constexpr, TWO: tl.constexpr):
    """acc[i] = sum_{k in [k_lo, k_hi)} x[k] * W[rows[i], k] in fp32 (and the same for rows2 if TWO).

    rows (BLOCK_N,) int64. Tiles are (BLOCK_N, BLOCK_K/32, 32): each 32-wide block is summed,
    then scaled by its d; one x tile serves both row sets.
    """
    NB: tl.constexpr = BLOCK_K // 32
    offs_b = tl.arange(0, NB)
    offs_kk = offs_b[:, None] * 32 + tl.arange(0, 32)[None, :]           # (NB, 32)
    w1 = w_ptr + rows[:, None, None] * stride_wn                           # (BLOCK_N, 1, 1)
    d1 = d_ptr + rows[:, None] * stride_dn                                 # (BLOCK_N, 1)
    w2 = w_ptr + rows2[:, None, None] * stride_wn
    d2 = d_ptr + rows2[:, None] * stride_dn
    acc = tl.zeros((BLOCK_N, NB), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, NB), dtype=tl.float32)
    for k in range(k_lo, k_hi, BLOCK_K):
        kk = k + offs_kk
        kb = k // 32 + offs_b
        if EVEN_K:
            xv = tl.load(x_row + kk).to(tl.float32)
        else:
            xv = tl.load(x_row + kk, mask=kk < k_hi, other=0.0).to(tl.float32)
        acc += _w_block(w1, d1, kk, kb, xv, k_hi, LAYOUT, EVEN_K)
        if TWO:
            acc2 += _w_block(w2, d2, kk, kb, xv, k_hi, LAYOUT, EVEN_K)
    return tl.sum(acc, axis=1), tl.sum(acc2, axis=1)


@triton.jit
def _epilogue(g, u, m, offs_n, nmask, bias_ptr, res_ptr, out_ptr, stride_rm, stride_om,
              GLU: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
    """out[m, n] = silu(g) * u (GLU) or g + bias[n] + residual[m, n]."""
    if GLU:
        y = g * tl.sigmoid(g) * u
    else:
        y = g
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        if HAS_RES:
            y += tl.load(res_ptr + m * stride_rm + offs_n, mask=nmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=nmask)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, d_ptr, bias_ptr, res_ptr, out_ptr, part_ptr,
                 M, N_OUT, K, stride_xm, stride_wn, stride_dn, stride_rm, stride_om, k_per_split,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LAYOUT: tl.constexpr,
                 EVEN_K: tl.constexpr, GLU: tl.constexpr, SPLIT: tl.constexpr,
                 HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
    """Grid (M, cdiv(N_OUT, BLOCK_N), SPLIT_K); x (M, K), W (N, K) row-major, N = N_OUT or 2*N_OUT (GLU).

    g[m, n] = sum_k x[m, k] * W[n, k] (Q8_0: d[n, k // 32] * qs[n, k]), fp32 accumulate;
    out[m, n] = g + bias[n] + residual[m, n], or with GLU silu(g[m, n]) * g[m, N_OUT + n]:
    each program computes gate rows n and up rows N_OUT + n for the same n.
    SPLIT: writes fp32 partial sums part[s, m, :] (gate then up for GLU); _reduce_kernel finishes.
    m is the fastest grid axis so programs sharing a weight tile run together (one DRAM read).
    """
    m = tl.program_id(0)
    pid_n = tl.program_id(1)
    s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N_OUT
    rows = tl.minimum(offs_n, N_OUT - 1).to(tl.int64)   # clamped: loads need no row mask
    k_lo = s * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    x_row = x_ptr + m * stride_xm
    g, u = _dot_rows(x_row, w_ptr, d_ptr, rows, rows + N_OUT, stride_wn, stride_dn, k_lo, k_hi,
                     BLOCK_N, BLOCK_K, LAYOUT, EVEN_K, GLU)
    if SPLIT:
        width = 2 * N_OUT if GLU else N_OUT
        base = part_ptr + (s * M + m) * width
        tl.store(base + offs_n, g, mask=nmask)
        if GLU:
            tl.store(base + N_OUT + offs_n, u, mask=nmask)
    else:
        _epilogue(g, u, m, offs_n, nmask, bias_ptr, res_ptr, out_ptr, stride_rm, stride_om,
                  GLU, HAS_BIAS, HAS_RES)


@triton.jit
def _reduce_kernel(part_ptr, bias_ptr, res_ptr, out_ptr, M, N_OUT, stride_rm, stride_om,
                   SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, GLU: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
    """Grid (M, cdiv(N_OUT, BLOCK)): sums part (SPLIT_K, M, width) in a fixed order (deterministic)."""
    m = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    nmask = offs_n < N_OUT
    width = 2 * N_OUT if GLU else N_OUT
    g = tl.zeros((BLOCK,), dtype=tl.float32)
    u = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLIT_K):
        base = part_ptr + (s * M + m) * width
        g += tl.load(base + offs_n, mask=nmask, other=0.0)
        if GLU:
            u += tl.load(base + N_OUT + offs_n, mask=nmask, other=0.0)
    _epilogue(g, u, m, offs_n, nmask, bias_ptr, res_ptr, out_ptr, stride_rm, stride_om,
              GLU, HAS_BIAS, HAS_RES)


# ---------------------------------------------------------------------------- dispatch


@dataclass
class GemvCall:
    """One checked GEMV launch: what a family's launcher passes to its kernel beside the weight buffers.

    x (M, K); out (M, N_OUT), or part (SPLIT_K, M, N_OUT x mats) fp32 when config.split_k > 1, which
    the dispatcher then reduces with the epilogue; bias/res are out itself when absent (never read).
    """

    x: torch.Tensor
    out: torch.Tensor
    part: torch.Tensor
    bias: torch.Tensor
    res: torch.Tensor
    stride_rm: int
    n_out: int
    glu: bool
    has_bias: bool
    has_res: bool
    config: GemvConfig
    k_per_split: int
    even_k: bool

    @property
    def grid(self) -> tuple[int, int, int]:
        """(M, cdiv(N_OUT, BLOCK_N), SPLIT_K): m fastest, so programs sharing a weight tile run together."""
        return (self.x.shape[0], triton.cdiv(self.n_out, self.config.block_n), self.config.split_k)

    @property
    def flags(self) -> dict:
        """The constexprs every family kernel takes."""
        return dict(BLOCK_N=self.config.block_n, BLOCK_K=self.config.block_k, EVEN_K=self.even_k, GLU=self.glu,
                    SPLIT=self.config.split_k > 1, HAS_BIAS=self.has_bias, HAS_RES=self.has_res,
                    num_warps=self.config.num_warps)


@dataclass(frozen=True)
class GemvFamily:
    launch: Callable[[GemvCall, PackedWeight], None]  # checks the weight's buffers, launches on call.grid
    stream_bytes: Callable[[PackedWeight], float]  # bytes per weight of the stream the tiles are sized on
    # the family's own tiles, (n_out, k, weight, n_mats, device) -> GemvConfig; None: gemv_settings on stream_bytes
    settings: Callable[[int, int, PackedWeight, int, torch.device], GemvConfig] | None = None


FAMILIES: dict[str, GemvFamily] = {}


def register_family(kernels: tuple[str, ...], family: GemvFamily) -> None:
    """Route the formats whose `kernel` is in `kernels` to this family's launcher."""
    for name in kernels:
        FAMILIES[name] = family


def supports(fmt: QuantFormat) -> bool:
    """Whether the GEMV has a kernel for this format's device layout."""
    return fmt.kernel in FAMILIES


def check_x(x: torch.Tensor, k: int, *buffers: torch.Tensor) -> None:
    if x.dim() not in (1, 2) or x.stride(-1) != 1 or x.shape[-1] != k:
        raise ValueError(f"x must be ({k},) or (M, {k}) with unit stride on K, got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp32/fp16/bf16, got {x.dtype}")
    if any(b.device != x.device for b in buffers):
        raise ValueError("x, the weight and its scales must be on the same device")


def _check_q8(w: torch.Tensor, d: torch.Tensor | None) -> None:
    if w.dim() != 2 or w.stride(1) != 1:
        raise ValueError(f"weight must be (N, K) with unit stride on K, got {tuple(w.shape)}")
    if d is None:
        if w.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"a dense weight must be fp16/bf16/fp32, got {w.dtype}")
        return
    n, k = w.shape
    if w.dtype != torch.int8 or k % 32:
        raise ValueError(f"Q8_0 qs must be int8 with K % 32 == 0, got {w.dtype} K={k}")
    if d.dtype != torch.float16 or tuple(d.shape) != (n, k // 32) or d.stride(1) != 1:
        raise ValueError(f"Q8_0 d must be fp16 ({n}, {k // 32}), got {d.dtype} {tuple(d.shape)}")


def _launch_q8_dense(call: GemvCall, weight: PackedWeight) -> None:
    w, d = (weight.parts[0], None) if weight.fmt.kernel == "dense" else weight.parts[:2]
    _check_q8(w, d)
    d_arg = w if d is None else d
    x = call.x
    _gemv_kernel[call.grid](
        x, w, d_arg, call.bias, call.res, call.out, call.part,
        x.shape[0], call.n_out, x.shape[1], x.stride(0), w.stride(0), d_arg.stride(0), call.stride_rm,
        call.out.stride(0), call.k_per_split, LAYOUT=LAYOUTS[weight.fmt.kernel], **call.flags)


register_family(("dense", "q8_0"), GemvFamily(_launch_q8_dense, lambda w: w.parts[0].element_size()))


def _launch(x, weight: PackedWeight, n_out, glu, bias, residual, out, config):
    from . import stacked  # mixed-format weights (it imports this module)

    if isinstance(weight, stacked.StackedWeight):
        return stacked.launch(x, weight, n_out, glu, bias, residual, out, config)
    if not supports(weight.fmt):
        raise ValueError(f"the Triton GEMV has no kernel for {weight.fmt.name} weights")
    if x.dim() in (1, 2) and x.shape[-1] != weight.k:
        raise ValueError(f"weight must be (N, {x.shape[-1]}), got {tuple(weight.shape)}")
    check_x(x, weight.k, *weight.parts)
    x2 = x if x.dim() == 2 else x.unsqueeze(0)  # (M, K)
    m, k = x2.shape
    out_shape = (m, n_out) if x.dim() == 2 else (n_out,)
    if out is None:
        out = torch.empty(out_shape, device=x.device, dtype=torch.float32)
    if tuple(out.shape) != out_shape or out.stride(-1) != 1:
        raise ValueError(f"out must be {out_shape} with unit last stride, got {tuple(out.shape)}")
    if bias is not None and (tuple(bias.shape) != (n_out,) or not bias.is_contiguous()):
        raise ValueError(f"bias must be contiguous ({n_out},), got {tuple(bias.shape)}")
    if residual is not None and (tuple(residual.shape) != out_shape or residual.stride(-1) != 1):
        raise ValueError(f"residual must be {out_shape} with unit last stride, got {tuple(residual.shape)}")
    out2 = out if out.dim() == 2 else out.unsqueeze(0)
    res2 = None if residual is None else (residual if residual.dim() == 2 else residual.unsqueeze(0))
    family = FAMILIES[weight.fmt.kernel]
    if config is None and family.settings is not None:
        config = family.settings(n_out, k, weight, 2 if glu else 1, x.device)
    elif config is None:
        config = gemv_settings(n_out, k, family.stream_bytes(weight), 2 if glu else 1, x.device)
    split = config.split_k > 1
    part = torch.empty((config.split_k, m, n_out * (2 if glu else 1)), device=x.device,
                       dtype=torch.float32) if split else out2
    call = GemvCall(
        x=x2, out=out2, part=part, bias=out2 if bias is None else bias, res=out2 if res2 is None else res2,
        stride_rm=0 if res2 is None else res2.stride(0), n_out=n_out, glu=glu, has_bias=bias is not None,
        has_res=res2 is not None, config=config,
        k_per_split=triton.cdiv(triton.cdiv(k, config.block_k), config.split_k) * config.block_k,
        even_k=k % config.block_k == 0 and (k // config.block_k) % config.split_k == 0)
    family.launch(call, weight)
    if split:
        block = reduce_block(n_out)
        _reduce_kernel[(m, triton.cdiv(n_out, block))](
            part, call.bias, call.res, out2, m, n_out, call.stride_rm, out2.stride(0),
            SPLIT_K=config.split_k, BLOCK=block, GLU=glu, HAS_BIAS=call.has_bias, HAS_RES=call.has_res,
            num_warps=4)
    return out


def gemv(x: torch.Tensor, w: PackedWeight, *, bias: torch.Tensor | None = None,
         residual: torch.Tensor | None = None, out: torch.Tensor | None = None,
         config: GemvConfig | None = None) -> torch.Tensor:
    """y = x @ W^T (+ bias) (+ residual), fp32 accumulate; x (K,) -> (N,), x (M, K) -> (M, N).

    out defaults to a new fp32 tensor; out may be `residual` itself (in-place residual add).
    config defaults to the settings for this shape and device.
    """
    return _launch(x, w, w.shape[0], False, bias, residual, out, config)


def gemv_silu_mul(x: torch.Tensor, w: PackedWeight, *, out: torch.Tensor | None = None,
                  config: GemvConfig | None = None) -> torch.Tensor:
    """silu(x @ Wg^T) * (x @ Wu^T) for a fused weight (2F, K): rows [0, F) gate, [F, 2F) up."""
    if w.shape[0] % 2:
        raise ValueError(f"fused gate+up weight must have an even row count, got {tuple(w.shape)}")
    return _launch(x, w, w.shape[0] // 2, True, None, None, out, config)
