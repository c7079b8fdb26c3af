"""Quantization formats: the raw ggml block layout, repacking for kernels, and reference dequantization."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantWeight:
    """A Q8_0 matrix of logical shape (N, K), repacked: weight[n, k] = d[n, k // 32] * qs[n, k]."""

    qs: torch.Tensor  # (N, K) int8
    d: torch.Tensor  # (N, K // 32) float16

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qs.shape)

    @property
    def device(self) -> torch.device:
        return self.qs.device

    @property
    def nbytes(self) -> int:
        return self.qs.numel() * self.qs.element_size() + self.d.numel() * self.d.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return Q8_0.dequantize(self.qs, self.d, dtype)

    def rows(self, index: torch.Tensor) -> "QuantWeight":
        """The rows at `index` (an embedding lookup), still quantized."""
        return QuantWeight(self.qs[index], self.d[index])


class Q8_0:
    """ggml Q8_0: blocks of 32 weights, 34 bytes each: fp16 scale d, then 32 int8 values."""

    block_size = 32
    type_size = 34

    @classmethod
    def unpack(cls, raw: torch.Tensor) -> QuantWeight:
        """Split raw blocks (N, K/32 * 34) uint8 into qs (N, K) int8 and d (N, K/32) fp16, on raw's device."""
        n_rows, row_bytes = raw.shape
        n_blocks = row_bytes // cls.type_size
        blocks = raw.view(n_rows, n_blocks, cls.type_size)  # (N, K/32, 34)
        d = blocks[:, :, :2].contiguous().view(torch.float16).view(n_rows, n_blocks)
        qs = blocks[:, :, 2:].contiguous().view(torch.int8).view(n_rows, n_blocks * cls.block_size)
        return QuantWeight(qs, d)

    @classmethod
    def dequantize(cls, qs: torch.Tensor, d: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Reference dequantization: (N, K) in `dtype`, computed in fp32 like ggml."""
        n_rows, k = qs.shape
        blocks = qs.view(n_rows, k // cls.block_size, cls.block_size).to(torch.float32)
        return (blocks * d.to(torch.float32).unsqueeze(-1)).view(n_rows, k).to(dtype)
