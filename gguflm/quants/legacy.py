"""ggml's 32-weight block formats (Q8_0 today; Q4_0, Q4_1, Q5_0, Q5_1 belong here too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.quants import QT, QuantFormat, register

if TYPE_CHECKING:
    import torch


class Q8_0Format(QuantFormat):
    """Blocks of 32 weights, 34 bytes: fp16 scale d, then 32 int8 q; w = d * q.

    Device layout: qs int8 (N, K) and d fp16 (N, K/32), so the GEMV streams 16-byte runs of qs.
    """

    ggml_type = QT.Q8_0
    kernel = "q8_0"

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch

        n_rows, row_bytes = raw.shape
        n_blocks = row_bytes // self.type_size
        blocks = raw.view(n_rows, n_blocks, self.type_size)  # (N, K/32, 34)
        d = blocks[:, :, :2].contiguous().view(torch.float16).view(n_rows, n_blocks)
        qs = blocks[:, :, 2:].contiguous().view(torch.int8).view(n_rows, n_blocks * self.block_size)
        return qs, d

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        qs, d = parts
        n_rows, k = qs.shape
        blocks = qs.view(n_rows, k // self.block_size, self.block_size).to(torch.float32)
        return (blocks * d.to(torch.float32).unsqueeze(-1)).view(n_rows, k).to(dtype or torch.float32)


Q8_0 = register(Q8_0Format())
