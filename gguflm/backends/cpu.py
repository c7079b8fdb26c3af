"""The CPU backend: the reference transformer with its products computed by the CPU kernels
(`gguflm.cpu`): the packed blocks are read where they lie, never expanded as a whole per call.

Everything else (embedding, norms, RoPE, attention, the KV cache) is the reference's own code, so
the two differ only in the order fp32 products are summed. The kernels run on `threads` threads,
torch's own (small) ops on one.
"""

from __future__ import annotations

import torch

from gguflm import cpu
from gguflm.backends.reference import ReferenceBackend
from gguflm.quants import PackedWeight
from gguflm.threads import check_threads


class CpuBackend(ReferenceBackend):
    """`ReferenceBackend` with `gguflm.cpu.linear` (matvec or GEMM path) and `linear_rows` (row-exact)."""

    cache_dtype = torch.float32

    def __init__(self, cfg, weights, threads: int | None = None):
        super().__init__(cfg, weights)
        self.threads = check_threads(threads)

    def linear(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear(x, w, bias, self.threads)

    def linear_rows(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear_rows(x, w, bias, self.threads)
