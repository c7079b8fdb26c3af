"""ggml's 32-weight block formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (and, in iq4_nl.py, IQ4_NL).

The 4- and 5-bit formats share one device layout of planes, each holding the N rows along dim 0:
  qs uint8 (N, K/2)  the block's 16 nibble bytes as the file stores them: byte j of block b holds
                     element 32b + j (low nibble) and 32b + 16 + j (high nibble)
  d  fp16 (N, K/32)  the block scale
  m  fp16 (N, K/32)  the block minimum (Q4_1, Q5_1)
  qh int32 (N, K/32) the 32 fifth bits of a block, bit j = element 32b + j (Q5_0, Q5_1)
A row's nibbles are one contiguous run of K/2 bytes, so a GEMV reads them with 16-byte loads; the
planes hold exactly the file's bytes (4.5, 5, 5.5, 6 bits per weight), rearranged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.quants import QT, QuantFormat, register

if TYPE_CHECKING:
    import torch


def split_blocks(raw: torch.Tensor, type_size: int, fields: tuple[tuple[int, str], ...]) -> list[torch.Tensor]:
    """Raw rows (N, n_blocks * type_size) uint8 cut into per-block fields of (bytes, torch dtype name),
    laid out in block order; each field becomes a contiguous plane (N, n_blocks * bytes / itemsize)."""
    import torch

    n_rows = raw.shape[0]
    blocks = raw.view(n_rows, raw.shape[1] // type_size, type_size)  # (N, K/32, type_size)
    planes, at = [], 0
    for nbytes, dtype in fields:
        plane = blocks[:, :, at : at + nbytes].clone(memory_format=torch.contiguous_format).view(getattr(torch, dtype))  # a fresh, aligned copy
        planes.append(plane.view(n_rows, -1))
        at += nbytes
    return planes


def unpack_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """qs uint8 (N, K/2) -> the 4-bit codes (N, K/32, 32) uint8 in element order (low nibbles, then high)."""
    import torch

    b = qs.view(qs.shape[0], -1, 16)  # (N, K/32, 16)
    return torch.cat((b & 15, b >> 4), dim=-1)


def fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """qh int32 (N, K/32) -> 16 where a block element's fifth bit is set, else 0: (N, K/32, 32) uint8.

    Each byte of qh (little-endian: byte i holds elements 8i..8i+7) picks its 8 values from a table,
    which is several times faster on the CPU than shifting every bit out of the word.
    """
    import torch

    table = (((torch.arange(256, device=qh.device)[:, None] >> torch.arange(8, device=qh.device)) & 1) << 4)
    by_byte = qh.contiguous().view(torch.uint8).view(qh.shape[0], qh.shape[1], 4)
    return table.to(torch.uint8)[by_byte.long()].view(qh.shape[0], qh.shape[1], 32)


class Q8_0Format(QuantFormat):
    """Blocks of 32 weights, 34 bytes: fp16 scale d, then 32 int8 q; w = d * q.

    Device layout: qs int8 (N, K) and d fp16 (N, K/32), so the GEMV streams 16-byte runs of qs.
    """

    ggml_type = QT.Q8_0
    kernel = "q8_0"

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d, qs = split_blocks(raw, self.type_size, ((2, "float16"), (32, "int8")))
        return qs, d

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        qs, d = parts
        n_rows, k = qs.shape
        blocks = qs.view(n_rows, k // self.block_size, self.block_size).to(torch.float32)
        return (blocks * d.to(torch.float32).unsqueeze(-1)).view(n_rows, k).to(dtype or torch.float32)


class NibbleFormat(QuantFormat):
    """A 32-weight block of fp16 d [, fp16 m] [, 4 bytes of fifth bits], 16 nibble bytes.

    w = d * (q - offset) without a minimum (Q4_0: offset 8, Q5_0: 16), w = d * q + m with one;
    device layout (module docstring): parts (qs, d[, m][, qh]).
    """

    def __init__(self, ggml_type: QT, has_min: bool, fifth_bit: bool):
        self.ggml_type = ggml_type
        self.kernel = ggml_type.name.lower()
        self.has_min = has_min
        self.fifth_bit = fifth_bit
        self.offset = 0 if has_min else (16 if fifth_bit else 8)

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fields = [(2, "float16")] + [(2, "float16")] * self.has_min + [(4, "int32")] * self.fifth_bit
        d, *rest, qs = split_blocks(raw, self.type_size, (*fields, (16, "uint8")))
        return (qs, d, *rest)

    def codes(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The integer codes (N, K/32, 32) uint8, fifth bit included."""
        q = unpack_nibbles(parts[0])
        return q | fifth_bits(parts[-1]) if self.fifth_bit else q

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        q = self.codes(parts).to(torch.float32)  # (N, K/32, 32)
        d = parts[1].to(torch.float32).unsqueeze(-1)
        if self.has_min:  # ggml: d * q + m, two roundings (no fused multiply-add)
            w = d * q + parts[2].to(torch.float32).unsqueeze(-1)
        else:
            w = d * (q - self.offset)
        return w.view(q.shape[0], -1).to(dtype or torch.float32)


Q8_0 = register(Q8_0Format())
Q4_0 = register(NibbleFormat(QT.Q4_0, has_min=False, fifth_bit=False))
Q4_1 = register(NibbleFormat(QT.Q4_1, has_min=True, fifth_bit=False))
Q5_0 = register(NibbleFormat(QT.Q5_0, has_min=False, fifth_bit=True))
Q5_1 = register(NibbleFormat(QT.Q5_1, has_min=True, fifth_bit=True))
