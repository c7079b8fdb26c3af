"""IQ4_NL: 32-weight blocks of fp16 d and 16 nibble bytes indexing a fixed non-linear table.

w = d * KVALUES[q]; the nibbles are ordered as Q4_0's, and the device layout is Q4_0's
(qs uint8 (N, K/2), d fp16 (N, K/32); see legacy.py): 4.5 bits per weight, as in the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gguflm.quants import QT, QuantFormat, register
from gguflm.quants.legacy import split_blocks, unpack_codes

if TYPE_CHECKING:
    import torch

# ggml's kvalues_iq4nl: the 16 levels, roughly uniform in a Gaussian's quantiles
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _level_polynomial() -> tuple[float, ...]:
    """Coefficients (highest first) of a quartic in t = code - 7.5 that is within 0.48 of every level, so
    rounding it gives the level exactly: on the CPU five fused passes beat a gather from the table."""
    t = np.arange(16, dtype=np.float64) - 7.5
    coeffs = np.polyfit(t, np.array(KVALUES, dtype=np.float64), 4).astype(np.float32)
    value = np.zeros(16, dtype=np.float32)
    for c in coeffs:  # Horner in float32, as dequantize computes it
        value = value * t.astype(np.float32) + c
    if not np.array_equal(np.rint(value), np.array(KVALUES, dtype=np.float32)):
        raise RuntimeError("the IQ4_NL level polynomial does not round to the table")
    return tuple(float(c) for c in coeffs)


LEVEL_POLY = _level_polynomial()


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
        t = unpack_codes(qs).to(torch.float32).sub_(7.5)  # (N, K/32, 32)
        w = torch.full_like(t, LEVEL_POLY[0])
        for c in LEVEL_POLY[1:]:
            w.mul_(t).add_(c)
        w.round_().mul_(d.to(torch.float32).unsqueeze(-1))  # the level (exact), times d: one rounding, as ggml
        return w.view(qs.shape[0], -1).to(dtype or torch.float32)


IQ4_NL = register(IQ4_NLFormat())
