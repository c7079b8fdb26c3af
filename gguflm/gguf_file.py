"""Open a GGUF file: a validating parser of the header, metadata and tensor table over one memory map.

gguf-py's GGUFReader builds numpy views for every string in the file, which takes 14 s on a
Llama 3 vocabulary (2026-11-21, this repo's 2-core machine); this parser reads the same file in
well under a second. It uses gguf-py's constants (value types, quant sizes) and never copies data.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from gguflm.errors import GGUFLMError

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType
# fixed-size metadata value types: (struct format, numpy dtype)
_SCALARS = {
    VT.UINT8: ("<B", np.uint8), VT.INT8: ("<b", np.int8), VT.UINT16: ("<H", np.uint16),
    VT.INT16: ("<h", np.int16), VT.UINT32: ("<I", np.uint32), VT.INT32: ("<i", np.int32),
    VT.FLOAT32: ("<f", np.float32), VT.BOOL: ("<?", np.bool_), VT.UINT64: ("<Q", np.uint64),
    VT.INT64: ("<q", np.int64), VT.FLOAT64: ("<d", np.float64),
}
# tensor types whose elements numpy can view directly; the others are exposed as raw block bytes
_NUMPY_TYPES = {QT.F32: np.float32, QT.F16: np.float16, QT.F64: np.float64, QT.I8: np.int8,
                QT.I16: np.int16, QT.I32: np.int32, QT.I64: np.int64}
_MAX_COUNT = 1 << 24  # more tensors or keys than this is a corrupt header, not a model
_MAX_DIMS = 4
_MAX_ARRAY_DEPTH = 8


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table; `shape` is in ggml order (ne0, the row length, first)."""

    name: str
    tensor_type: QT
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    data_offset: int  # absolute, in bytes from the start of the file
    _file: np.memmap

    @property
    def data(self) -> np.ndarray:
        """A zero-copy view: numpy-viewable types as (..., ne1, ne0); block types as (..., ne1, row bytes)."""
        raw = self._file[self.data_offset : self.data_offset + self.n_bytes]
        dims = tuple(reversed(self.shape))
        if self.tensor_type in _NUMPY_TYPES:
            return raw.view(_NUMPY_TYPES[self.tensor_type]).reshape(dims)
        block, type_size = gguf.GGML_QUANT_SIZES[self.tensor_type]
        return raw.reshape(dims[:-1] + (dims[-1] // block * type_size,))


@dataclass
class GGUFFile:
    """A validated, memory-mapped GGUF file: metadata as Python values, tensors by name."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    @property
    def architecture(self) -> str:
        return self.require(gguf.Keys.General.ARCHITECTURE, str)

    def get(self, key: str, default: Any = None, kind: type | tuple[type, ...] = object) -> Any:
        """The value of a key, or `default` when absent; a present value must be of `kind`."""
        if key not in self.metadata:
            return default
        return self._checked(key, kind)

    def require(self, key: str, kind: type | tuple[type, ...] = object) -> Any:
        """The value of a key that must be present, of the given Python type."""
        if key not in self.metadata:
            raise GGUFLMError(f"{self.path.name}: metadata key '{key}' is missing")
        return self._checked(key, kind)

    def _checked(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.metadata[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise GGUFLMError(f"{self.path.name}: metadata key '{key}' has the wrong type ({type(value).__name__})")
        return value

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFLMError(f"{self.path.name}: tensor '{name}' is missing") from None


class _Parser:
    """Reads little-endian GGUF fields from the memory map, checking every length against the file."""

    def __init__(self, buf: np.memmap, name: str):
        self.buf = buf
        self.mem = memoryview(buf)
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> GGUFLMError:
        return GGUFLMError(f"{self.name}: {what} at byte {self.pos} (corrupt or truncated file)")

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise self.fail("data runs past the end of the file")
        self.pos += n
        return start

    def scalar(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.mem, start)[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        start = self.take(n)
        return bytes(self.mem[start : start + n]).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == VT.STRING:
            return self.string()
        if vtype == VT.ARRAY:
            return self.array(depth=1)
        if vtype not in _SCALARS:
            raise self.fail(f"unknown metadata value type {vtype}")
        value = self.scalar(_SCALARS[VT(vtype)][0])
        return bool(value) if vtype == VT.BOOL else value

    def strings(self, count: int) -> list[str]:
        """`count` length-prefixed strings: a tight loop, since vocabularies hold 150k+ of them."""
        unpack, mem, end, pos, out = struct.Struct("<Q").unpack_from, self.mem, len(self.buf), self.pos, []
        for _ in range(count):
            if pos + 8 > end:
                raise self.fail("a string array runs past the end of the file")
            n = unpack(mem, pos)[0]
            pos += 8
            if pos + n > end:
                raise self.fail("a string array runs past the end of the file")
            out.append(str(mem[pos : pos + n], "utf-8", "replace"))
            pos += n
        self.pos = pos
        return out

    def array(self, depth: int) -> list:
        if depth > _MAX_ARRAY_DEPTH:
            raise self.fail(f"metadata arrays nested more than {_MAX_ARRAY_DEPTH} deep")
        etype, count = self.scalar("<I"), self.scalar("<Q")
        if etype == VT.STRING:
            return self.strings(count)
        if etype == VT.ARRAY:
            return [self.array(depth + 1) for _ in range(count)]
        if etype not in _SCALARS:
            raise self.fail(f"unknown array element type {etype}")
        fmt, dtype = _SCALARS[VT(etype)]
        start = self.take(count * struct.calcsize(fmt))
        values = np.frombuffer(self.mem, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)
        return values.tolist()


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Memory-map and validate a GGUF file; any malformed input raises GGUFLMError."""
    path = Path(path)
    if not path.is_file():
        raise GGUFLMError(f"{path} is a directory, not a GGUF file" if path.is_dir() else f"{path}: no such file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise GGUFLMError(f"{path}: not a GGUF file (bad magic {magic!r})")
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as e:
        raise GGUFLMError(f"{path}: cannot read the file ({e.strerror or e})") from None
    p = _Parser(buf, path.name)
    p.pos = 4
    version = p.scalar("<I")
    if version not in (2, 3):
        raise GGUFLMError(f"{path}: GGUF version {version} is not supported (supported: 2, 3)")
    n_tensors, n_kv = p.scalar("<Q"), p.scalar("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise p.fail(f"implausible counts ({n_tensors} tensors, {n_kv} keys)")

    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = p.string()
        metadata[key] = p.value(p.scalar("<I"))

    infos = []
    for _ in range(n_tensors):
        name = p.string()
        n_dims = p.scalar("<I")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise p.fail(f"tensor '{name}' has {n_dims} dimensions")
        shape = tuple(p.scalar("<Q") for _ in range(n_dims))
        raw_type, offset = p.scalar("<I"), p.scalar("<Q")
        infos.append((name, shape, raw_type, offset))

    alignment = metadata.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFLMError(f"{path}: general.alignment {alignment!r} is not a power of two")
    data_start = -(-p.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, shape, raw_type, offset in infos:
        if name in tensors:
            raise GGUFLMError(f"{path}: tensor '{name}' appears twice")
        tensors[name] = _tensor_info(path, buf, name, shape, raw_type, data_start + offset, size)
    return GGUFFile(path=path, version=version, metadata=metadata, tensors=tensors)


def _tensor_info(path: Path, buf, name: str, shape: tuple, raw_type: int, start: int, size: int) -> TensorInfo:
    try:
        qtype = QT(raw_type)
    except ValueError:
        raise GGUFLMError(f"{path}: tensor '{name}' has unknown type {raw_type}") from None
    if qtype not in gguf.GGML_QUANT_SIZES:
        raise GGUFLMError(f"{path}: tensor '{name}' has unknown type {qtype.name}")
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if any(d <= 0 for d in shape) or shape[0] % block:
        raise GGUFLMError(f"{path}: tensor '{name}' has an invalid shape {list(shape)} for {qtype.name}")
    n_elements = int(np.prod(shape, dtype=object))
    n_bytes = n_elements // block * type_size
    if start + n_bytes > size:
        raise GGUFLMError(f"{path}: tensor '{name}' extends past the end of the file (truncated?)")
    return TensorInfo(name, qtype, shape, n_elements, n_bytes, start, buf)
