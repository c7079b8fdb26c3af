"""The quant-type registry: one `QuantFormat` per ggml tensor type this build can hold and run.

A format knows its block geometry (from gguf-py's `GGML_QUANT_SIZES`), how the loader repacks
its file bytes into device buffers (`pack`), the reference dequantizer of those buffers
(bit-exact against `gguf.quants`), and which kernel family runs it (`kernel`). The loader, the
backends and the kernels all dispatch through `get(ggml_type)`; a new format is one module here.

Importing the registry does not import torch (`gguflm info` reads it at once): a format module
imports torch inside the methods that need it, and names its element type (`dtype_name`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gguf

from gguflm.errors import GGUFLMError
from gguflm.registry import Registry

if TYPE_CHECKING:
    import torch

QT = gguf.GGMLQuantizationType


class QuantFormat:
    """One ggml tensor type. Subclasses set `ggml_type` and `kernel` and implement `pack`/`dequantize`.

    Device layout contract: `pack` turns raw file rows (N, row_bytes) uint8, already on the device,
    into a tuple of buffers that each hold the N rows along dim 0, so that selecting rows
    (embedding lookups, chunked dequantization) is the same for every format.
    """

    ggml_type: QT
    kernel: str  # the kernel family that reads the packed buffers: "dense", "q8_0", ...
    dtype_name: str | None = None  # dense formats: the torch element type they hold ("float16", ...)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        if self.dtype_name is None:
            return None
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def name(self) -> str:
        return self.ggml_type.name

    @property
    def block_size(self) -> int:
        return gguf.GGML_QUANT_SIZES[self.ggml_type][0]

    @property
    def type_size(self) -> int:
        return gguf.GGML_QUANT_SIZES[self.ggml_type][1]

    def row_bytes(self, k: int) -> int:
        return k // self.block_size * self.type_size

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """(N, K) in `dtype` (default float32) from packed buffers, computed as ggml computes it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name}: {self.block_size} per {self.type_size} B block, {self.kernel} kernels>"


@dataclass
class PackedWeight:
    """A matrix of logical shape (N, K) in one format's device layout; never expanded in memory."""

    fmt: QuantFormat
    parts: tuple[torch.Tensor, ...]  # the device buffers, rows along dim 0
    k: int  # row length in weights
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # views of the parts a backend
    # makes once per weight (the CPU kernels' numpy planes), not per call; a row selection starts empty

    @property
    def shape(self) -> tuple[int, int]:
        return (self.parts[0].shape[0], self.k)

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parts)

    def rows(self, index: slice | torch.Tensor) -> "PackedWeight":
        """The rows at `index` (a slice or an index tensor: an embedding lookup), still packed."""
        return PackedWeight(self.fmt, tuple(p[index] for p in self.parts), self.k)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(N, K) in `dtype` (default float32)."""
        if dtype is None:
            import torch

            dtype = torch.float32
        return self.fmt.dequantize(self.parts, dtype)


@dataclass
class StackedWeight:
    """A matrix whose row blocks are in different formats (a fused QKV of a Q4_K_M file, its V in Q6_K):
    each block a PackedWeight of its own, multiplied block by block; never expanded in memory."""

    pieces: tuple[PackedWeight, ...]  # rows in order: pieces[0]'s rows first

    @property
    def k(self) -> int:
        return self.pieces[0].k

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(p.shape[0] for p in self.pieces), self.k)

    @property
    def device(self) -> torch.device:
        return self.pieces[0].device

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pieces)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        return torch.cat([p.dequantize(dtype) for p in self.pieces])


def formats(w: PackedWeight | StackedWeight) -> tuple[QuantFormat, ...]:
    """The formats a matrix is held in: one, or one per piece of a stacked weight."""
    return tuple(p.fmt for p in w.pieces) if isinstance(w, StackedWeight) else (w.fmt,)


FORMATS: Registry[QuantFormat] = Registry(key=lambda f: f.ggml_type)
register, unregister, lookup = FORMATS.register, FORMATS.unregister, FORMATS.lookup


def supported() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS.values())


def get(ggml_type: QT, tensor: str = "") -> QuantFormat:
    """The format of a tensor type, or a GGUFLMError naming the tensor and what is supported."""
    fmt = lookup(ggml_type)
    if fmt is None:
        what = f"tensor '{tensor}' has type {ggml_type.name}" if tensor else f"type {ggml_type.name}"
        raise GGUFLMError(f"{what}, which is not supported (supported: {', '.join(supported())})")
    return fmt


def pack(raw: torch.Tensor, ggml_type: QT) -> PackedWeight:
    """Raw file rows (N, row_bytes) uint8 of a known type, in its device layout on raw's device."""
    fmt = get(ggml_type)
    n_rows, row_bytes = raw.shape
    return PackedWeight(fmt, fmt.pack(raw), row_bytes // fmt.type_size * fmt.block_size)


# The formats: importing a family module registers its members.
from gguflm.quants import dense, iq4_nl, kquants, legacy  # noqa: E402,F401
