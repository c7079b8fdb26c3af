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


def _words(t: torch.Tensor) -> torch.Tensor:
    """A uint8 plane (N, bytes) as int32 words (N, bytes / 4), a view where its rows are 4-byte aligned."""
    import torch

    if t.storage_offset() % 4 or t.stride(0) % 4 or t.stride(1) != 1:
        t = t.contiguous()
    return t.view(torch.int32)


def unpack_codes(qs: torch.Tensor, qh: torch.Tensor | None = None) -> torch.Tensor:
    """The codes (N, K/32, 32) uint8 in element order: qs uint8 (N, K/2) nibbles, low then high; with
    qh int32 (N, K/32), each element's fifth bit as 16.

    Worked four bytes at a time in int32 words (the CPU path's speed): a block's 16 bytes are 4 words,
    their low nibbles (x & 0x0F0F0F0F) are elements 0..15 and their high ones 16..31, in byte order.
    The fifth bits of elements 4i..4i+3 are spread to the bytes of word i by a multiply: n * 0x204081
    puts bit t of a nibble n at bit 8t (the four shifted copies of n do not overlap).
    """
    import torch

    n_rows = qs.shape[0]
    b = _words(qs).view(n_rows, -1, 4)  # (N, K/32, 4)
    words = torch.cat((b & 0x0F0F0F0F, (b >> 4) & 0x0F0F0F0F), dim=-1)  # (N, K/32, 8)
    if qh is not None:
        shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qh.device)
        nibble = (qh.unsqueeze(-1) >> shifts) & 0xF  # (N, K/32, 8): the fifth bits of elements 4i..4i+3
        words |= ((nibble * 0x204081) & 0x01010101) << 4
    return words.view(torch.uint8).view(n_rows, -1, 32)


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
        return blocks.mul_(d.to(torch.float32).unsqueeze(-1)).view(n_rows, k).to(dtype or torch.float32)


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
        return unpack_codes(parts[0], parts[-1] if self.fifth_bit else None)

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        w = self.codes(parts).to(torch.float32)  # (N, K/32, 32); in place from here (fresh tensors page-fault)
        d = parts[1].to(torch.float32).unsqueeze(-1)
        if self.has_min:  # ggml: d * q + m, two roundings (no fused multiply-add)
            w.mul_(d).add_(parts[2].to(torch.float32).unsqueeze(-1))
        else:
            w.sub_(self.offset).mul_(d)
        return w.view(w.shape[0], -1).to(dtype or torch.float32)


Q8_0 = register(Q8_0Format())
Q4_0 = register(NibbleFormat(QT.Q4_0, has_min=False, fifth_bit=False))
Q4_1 = register(NibbleFormat(QT.Q4_1, has_min=True, fifth_bit=False))
Q5_0 = register(NibbleFormat(QT.Q5_0, has_min=False, fifth_bit=True))
Q5_1 = register(NibbleFormat(QT.Q5_1, has_min=True, fifth_bit=True))
