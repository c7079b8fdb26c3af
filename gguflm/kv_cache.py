"""A preallocated key/value cache for every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gguflm.config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor  # (n_layers, n_kv_heads, max_ctx, head_dim)
    v: torch.Tensor  # (n_layers, n_kv_heads, max_ctx, head_dim)
    length: int = 0  # positions [0, length) hold valid entries

    @classmethod
    def allocate(cls, cfg: ModelConfig, max_ctx: int, device: str | torch.device, dtype: torch.dtype) -> "KVCache":
        shape = (cfg.n_layers, cfg.n_kv_heads, max_ctx, cfg.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def max_ctx(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    @property
    def row_bytes(self) -> int:
        """Bytes of K and V of one position, all layers: what attention reads per cached token."""
        return self.nbytes // self.max_ctx
