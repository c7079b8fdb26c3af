"""RMSNorm over the last dim of (H,) or (M, H) activations (the residual add lives in the GEMV epilogues)."""

import torch
import triton
import triton.language as tl

from .settings import rmsnorm_settings

# ---------------------------------------------------------------------------- kernel


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, out_ptr, n_rows, H, eps, s_x, s_o,
                    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """Grid (cdiv(n_rows, BLOCK_R),): BLOCK_R rows of length H per program.

    out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, all math in fp32.
    """
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_H)
    mask = (r < n_rows)[:, None] & (c < H)[None, :]
    rows = r.to(tl.int64)[:, None]
    x = tl.load(x_ptr + rows * s_x + c[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / H + eps)
    w = tl.load(w_ptr + c, mask=c < H, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(out_ptr + rows * s_o + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------- launcher


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """rmsnorm(x) * weight over the last dim of x (H,) or (M, H); out defaults to x's dtype."""
    if x.dim() not in (1, 2) or x.stride(-1) != 1:
        raise ValueError(f"x must be (H,) or (M, H) with unit last stride, got {tuple(x.shape)}")
    h = x.shape[-1]
    if tuple(weight.shape) != (h,) or not weight.is_contiguous():
        raise ValueError(f"weight must be contiguous ({h},), got {tuple(weight.shape)}")
    if out is None:
        out = torch.empty_like(x)
    if out.shape != x.shape or out.stride(-1) != 1:
        raise ValueError(f"out must have x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    x2, o2 = x.view(-1, h) if x.dim() == 1 else x, out.view(-1, h) if out.dim() == 1 else out
    block_h, block_r, num_warps = rmsnorm_settings(h)
    _rmsnorm_kernel[(triton.cdiv(x2.shape[0], block_r),)](
        x2, weight, o2, x2.shape[0], h, float(eps), x2.stride(0), o2.stride(0),
        BLOCK_R=block_r, BLOCK_H=block_h, num_warps=num_warps)
    return out
