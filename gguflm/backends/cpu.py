"""The CPU backend: the reference transformer with its products computed by the CPU kernels
(`gguflm.cpu`): the packed blocks are read where they lie, never expanded as a whole per call.

Everything else (embedding, norms, RoPE, attention, the KV cache) is the reference's own code, so
the two differ only in the order fp32 products are summed; `threads` sets how many threads compute.
"""

from __future__ import annotations

import torch

from gguflm import cpu
from gguflm.backends.reference import ReferenceBackend
from gguflm.threads import check_threads, set_threads


class CpuBackend(ReferenceBackend):
    """`ReferenceBackend` with `gguflm.cpu.linear` (matvec or GEMM path) and `linear_rows` (row-exact)."""

    cache_dtype = torch.float32
    linear = staticmethod(cpu.linear)
    linear_rows = staticmethod(cpu.linear_rows)

    def __init__(self, cfg, weights, threads: int | None = None):
        super().__init__(cfg, weights)
        self.threads = check_threads(threads)
        set_threads(self.threads)
