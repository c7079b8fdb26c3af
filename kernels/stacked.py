"""Decode products over a weight whose row blocks are in different formats (`StackedWeight`: a fused
QKV whose V is Q6_K beside a Q4_K Q and K): one GEMV launch per block, each writing its slice of
the output (bias and residual sliced alike); gate+up computes both halves, then silu(g) * u."""

import torch

from gguflm import ops
from gguflm.quants import StackedWeight

__all__ = ["StackedWeight", "launch"]


def launch(x: torch.Tensor, weight: StackedWeight, n_out: int, glu: bool, bias: torch.Tensor | None,
           residual: torch.Tensor | None, out: torch.Tensor | None, config=None) -> torch.Tensor:
    """gemv / gemv_silu_mul (kernels/gemv.py) for a stacked weight; `config` is per piece, so ignored."""
    from .gemv import gemv

    lead = x.shape[:-1]
    if glu:
        y = ops.silu_mul(launch(x, weight, 2 * n_out, False, None, None, None))
        return y if out is None else out.copy_(y)
    if out is None:
        out = torch.empty(lead + (n_out,), device=x.device, dtype=torch.float32)
    row = 0
    for piece in weight.pieces:
        rows = slice(row, row + piece.shape[0])
        gemv(x, piece, bias=None if bias is None else bias[rows],
             residual=None if residual is None else residual[..., rows], out=out[..., rows])
        row = rows.stop
    return out
