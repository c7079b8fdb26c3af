"""Byte-level GGUF pieces the rewrite needs: each metadata entry's raw bytes (copied verbatim, so
every value keeps its exact type) and the header/tensor-info encoding of the output file."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

VT = gguf.GGUFValueType
_SCALAR_SIZES = {VT.UINT8: 1, VT.INT8: 1, VT.BOOL: 1, VT.UINT16: 2, VT.INT16: 2, VT.UINT32: 4, VT.INT32: 4,
                 VT.FLOAT32: 4, VT.UINT64: 8, VT.INT64: 8, VT.FLOAT64: 8}


def _skip_value(buf: np.ndarray, pos: int, vtype: int) -> int:
    if vtype == VT.STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == VT.ARRAY:
        etype, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in _SCALAR_SIZES:
            return pos + count * _SCALAR_SIZES[VT(etype)]
        for _ in range(count):
            pos = _skip_value(buf, pos, etype)
        return pos
    return pos + _SCALAR_SIZES[VT(vtype)]


def metadata_entries(path: Path) -> dict[str, bytes]:
    """Every metadata key of a GGUF file (already validated by gguf_file.open_gguf) with the raw
    bytes of its entry: key, value type and value, as they are in the file."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    _, _, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24
    entries = {}
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = bytes(buf[pos + 8:pos + 8 + klen]).decode("utf-8")
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos = _skip_value(buf, pos + 4, vtype)
        entries[key] = bytes(buf[start:pos])
    return entries


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def u32_entry(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", VT.UINT32, value)


def header(n_tensors: int, entries: list[bytes]) -> bytes:
    """Magic, version 3, the counts and the metadata entries."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(entries)) + b"".join(entries)


def tensor_info(name: str, shape: tuple[int, ...], qtype: int, offset: int) -> bytes:
    """One tensor-table entry: name, dims (ggml order), type, data offset from the data section."""
    return _string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, qtype, offset)


def padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment
