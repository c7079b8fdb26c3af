"""RMSNorm with a fused residual add, and a per-head variant (Qwen3's q/k norm)."""

import torch
import triton
import triton.language as tl

# ---------------------------------------------------------------------------- kernel


@triton.jit
def _rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, newres_ptr, n_rows, rows_per_group,
                    H, eps, sx0, sx1, sr0, sr1, so0, so1, sn0, sn1,
                    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, HAS_RES: tl.constexpr):
    """Grid (cdiv(n_rows, BLOCK_R),): BLOCK_R rows of length H per program.

    Row r lives at (r // rows_per_group) * s0 + (r % rows_per_group) * s1 in each tensor
    (a (M, heads, H) view of a fused buffer). h = x (+ res); out = h * rsqrt(mean(h^2) + eps) * w;
    h is stored to newres when HAS_RES. All math in fp32.
    """
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_H)
    mask = (r < n_rows)[:, None] & (c < H)[None, :]
    g = (r // rows_per_group).to(tl.int64)[:, None]
    i = (r % rows_per_group).to(tl.int64)[:, None]
    h = tl.load(x_ptr + g * sx0 + i * sx1 + c[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        h += tl.load(res_ptr + g * sr0 + i * sr1 + c[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(newres_ptr + g * sn0 + i * sn1 + c[None, :],
                 h.to(newres_ptr.dtype.element_ty), mask=mask)
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=1) / H + eps)
    w = tl.load(w_ptr + c, mask=c < H, other=0.0).to(tl.float32)
    y = h * rstd[:, None] * w[None, :]
    tl.store(out_ptr + g * so0 + i * so1 + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------- launchers


def _settings(H: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_R, num_warps): a whole row in registers; pack short rows (heads) together."""
    block_h = triton.next_power_of_2(H)
    block_r = max(1, min(16, 2048 // block_h))
    num_warps = max(1, min(16, block_r * block_h // 512))
    return block_h, block_r, num_warps


def _as3(t: torch.Tensor, H: int) -> torch.Tensor:
    """View as (G, R, H): 1-D -> (1, 1, H), 2-D (M, H) -> (M, 1, H), 3-D as is."""
    if t.dim() == 1:
        return t.view(1, 1, H)
    if t.dim() == 2:
        return t.unsqueeze(1)
    return t


def _launch(x, weight, eps, residual, out, residual_out):
    H = x.shape[-1]
    if x.dim() not in (1, 2, 3) or x.stride(-1) != 1:
        raise ValueError(f"x must be 1-3 D with unit last stride, got {tuple(x.shape)}")
    if tuple(weight.shape) != (H,) or not weight.is_contiguous():
        raise ValueError(f"weight must be contiguous ({H},), got {tuple(weight.shape)}")
    for name, t in (("residual", residual), ("out", out), ("residual_out", residual_out)):
        if t is not None and (t.shape != x.shape or t.stride(-1) != 1):
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    if out is None:
        out = torch.empty_like(x)
    if residual is not None and residual_out is None:
        residual_out = torch.empty_like(residual)
    x3, o3 = _as3(x, H), _as3(out, H)
    r3 = x3 if residual is None else _as3(residual, H)
    n3 = o3 if residual_out is None else _as3(residual_out, H)
    groups, per_group = x3.shape[0], x3.shape[1]
    n_rows = groups * per_group
    block_h, block_r, num_warps = _settings(H)
    _rmsnorm_kernel[(triton.cdiv(n_rows, block_r),)](
        x3, r3, weight, o3, n3, n_rows, per_group, H, float(eps),
        x3.stride(0), x3.stride(1), r3.stride(0), r3.stride(1),
        o3.stride(0), o3.stride(1), n3.stride(0), n3.stride(1),
        BLOCK_R=block_r, BLOCK_H=block_h, HAS_RES=residual is not None, num_warps=num_warps)
    return out, (x if residual is None else residual_out)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float,
            residual: torch.Tensor | None = None, *, out: torch.Tensor | None = None,
            residual_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + residual (or x); returns (rmsnorm(h) * weight, h) over the last dim of x (H,)/(M, H).

    out defaults to x's dtype; h goes to residual_out (default: new tensor of residual's dtype;
    may be `residual` itself for an in-place update). Without residual, h is x itself.
    """
    return _launch(x, weight, eps, residual, out, residual_out)


def rmsnorm_heads(x: torch.Tensor, weight: torch.Tensor, eps: float, *,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Normalize each head_dim slice of x (n_heads, head_dim) or (M, n_heads, head_dim).

    weight (head_dim,); x may be a strided view into a fused QKV buffer; out=x works in place.
    """
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (n_heads, head_dim) or (M, n_heads, head_dim), got {tuple(x.shape)}")
    x3 = x if x.dim() == 3 else x.unsqueeze(0)
    o3 = None if out is None else (out if out.dim() == 3 else out.unsqueeze(0))
    if o3 is None:
        o3 = torch.empty_like(x3)
    _launch(x3, weight, eps, None, o3, None)
    return o3 if x.dim() == 3 else o3.squeeze(0)


# ---------------------------------------------------------------------------- reference


def rmsnorm_ref(x, weight, eps, residual=None):
    """Torch reference: (rmsnorm(x + residual) * weight in x's dtype, x + residual)."""
    h = x.float() if residual is None else x.float() + residual.float()
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype), (x if residual is None else h.to(residual.dtype))


def rmsnorm_heads_ref(x, weight, eps):
    """Torch reference for rmsnorm_heads: normalize over the last (head_dim) axis."""
    return rmsnorm_ref(x, weight, eps)[0]
