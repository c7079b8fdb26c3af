"""F32, F16 and BF16: one element per "block", held on the device as a plain (N, K) tensor."""

from __future__ import annotations

import torch

from gguflm.quants import QT, QuantFormat, register


class Dense(QuantFormat):
    kernel = "dense"

    def __init__(self, ggml_type: QT, dtype: torch.dtype):
        self.ggml_type = ggml_type
        self.torch_dtype = dtype

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (raw.view(self.torch_dtype),)  # (N, K): the file's bytes, reinterpreted

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return parts[0].to(dtype)  # no copy when the type already matches


F32 = register(Dense(QT.F32, torch.float32))
F16 = register(Dense(QT.F16, torch.float16))
BF16 = register(Dense(QT.BF16, torch.bfloat16))
