"""F32, F16 and BF16: one element per "block", held on the device as a plain (N, K) tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.quants import QT, QuantFormat, register

if TYPE_CHECKING:
    import torch


class Dense(QuantFormat):
    kernel = "dense"

    def __init__(self, ggml_type: QT, dtype_name: str):
        self.ggml_type = ggml_type
        self.dtype_name = dtype_name

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (raw.view(self.torch_dtype),)  # (N, K): the file's bytes, reinterpreted

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        return parts[0].to(dtype or torch.float32)  # no copy when the type already matches


F32 = register(Dense(QT.F32, "float32"))
F16 = register(Dense(QT.F16, "float16"))
BF16 = register(Dense(QT.BF16, "bfloat16"))
