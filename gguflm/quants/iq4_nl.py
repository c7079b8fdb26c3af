"""IQ4_NL: 32-weight blocks of fp16 d and 16 nibble bytes indexing a fixed non-linear table.

w = d * KVALUES[q]; the nibbles are ordered as Q4_0's, and the device layout is Q4_0's
(qs uint8 (N, K/2), d fp16 (N, K/32); see legacy.py): 4.5 bits per weight, as in the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.quants import QT, QuantFormat, register
from gguflm.quants.legacy import split_blocks, unpack_nibbles

if TYPE_CHECKING:
    import torch

# ggml's kvalues_iq4nl: the 16 levels, roughly uniform in a Gaussian's quantiles
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


class IQ4_NLFormat(QuantFormat):
    """Blocks of 32 weights, 18 bytes: fp16 d, 16 bytes of 4-bit indices into KVALUES."""

    ggml_type = QT.IQ4_NL
    kernel = "iq4_nl"

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d, qs = split_blocks(raw, self.type_size, ((2, "float16"), (16, "uint8")))
        return qs, d

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        qs, d = parts
        table = torch.tensor(KVALUES, dtype=torch.float32, device=qs.device)
        w = table[unpack_nibbles(qs).long()] * d.to(torch.float32).unsqueeze(-1)  # (N, K/32, 32)
        return w.view(qs.shape[0], -1).to(dtype or torch.float32)


IQ4_NL = register(IQ4_NLFormat())
