"""Open a GGUF file through gguf-py's memory-mapped reader, validated, with typed metadata access."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from gguflm.errors import GGUFLMError

@dataclass
class GGUFFile:
    """A validated, memory-mapped GGUF file: metadata as Python values, tensors by name."""

    path: Path
    reader: gguf.GGUFReader
    metadata: dict[str, Any]
    tensors: dict[str, gguf.ReaderTensor]

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

    def tensor(self, name: str) -> gguf.ReaderTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFLMError(f"{self.path.name}: tensor '{name}' is missing") from None


def _field_value(field: gguf.ReaderField) -> Any:
    """Decode one metadata field into str, int, float, bool or a list of those."""
    types = field.types
    if not types:
        return None

    def scalar(vtype: gguf.GGUFValueType, part: np.ndarray) -> Any:
        if vtype == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8", errors="replace")
        if vtype == gguf.GGUFValueType.BOOL:
            return bool(part[0])
        if vtype in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
            return float(part[0])
        return int(part[0])

    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) < 2:
            return []
        if types[1] == gguf.GGUFValueType.ARRAY:
            return None  # nested arrays: no key we read uses them
        return [scalar(types[1], field.parts[i]) for i in field.data]
    return scalar(types[0], field.parts[field.data[0]])


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Memory-map and validate a GGUF file; any malformed input raises GGUFLMError."""
    path = Path(path)
    if not path.is_file():
        raise GGUFLMError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFLMError(f"{path}: not a GGUF file (bad magic {magic!r})")
    try:
        reader = gguf.GGUFReader(path, "r")
        metadata = {name: _field_value(field) for name, field in reader.fields.items()}
    except Exception as e:  # gguf-py raises many kinds on malformed input
        raise GGUFLMError(f"{path}: not a valid GGUF file or truncated ({type(e).__name__}: {e})") from None
    size = path.stat().st_size
    tensors: dict[str, gguf.ReaderTensor] = {}
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise GGUFLMError(f"{path}: tensor '{t.name}' extends past the end of the file (truncated?)")
        if t.name in tensors:
            raise GGUFLMError(f"{path}: tensor '{t.name}' appears twice")
        tensors[t.name] = t
    return GGUFFile(path=path, reader=reader, metadata=metadata, tensors=tensors)
