"""Mutated GGUF files for fuzzing every entry point: a valid file's bytes with fields changed where
they mean something (type tags, counts, string lengths, hparams, tensor shapes, types and offsets),
bits flipped, or the file cut short. `probe` runs a mutant through info, load + generate, the
tokenizer and the chat template and says how each ended.

Used by tests/test_fuzz_gguf.py (a few hundred mutants per run) and scripts/fuzz.py (many more).
"""

from __future__ import annotations

import math
import random
import struct
import traceback
from dataclasses import dataclass
from pathlib import Path

import gguf

VT = gguf.GGUFValueType
_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


@dataclass(frozen=True)
class Site:
    """A field of the header: where it is, how wide, and what it holds."""

    pos: int
    size: int
    kind: str  # "tag", "count", "length", "int", "float", "dims", "ttype", "offset"
    what: str  # for the report: the key or tensor it belongs to


def sites(path: str | Path) -> list[Site]:
    """Every meaningful field of a valid GGUF file's header, found with gguf-py's reader."""
    reader = gguf.GGUFReader(path)
    out: list[Site] = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            pos = field.offset
            out.append(Site(pos, field.parts[0].nbytes, "count" if "count" in key else "int", key))
            continue
        pos = field.offset
        sizes = [p.nbytes for p in field.parts]
        out.append(Site(pos, 8, "length", key))  # the key's length
        tag_pos = pos + sizes[0] + sizes[1]
        out.append(Site(tag_pos, 4, "tag", key))
        vtype = field.types[0]
        value_pos = tag_pos + 4
        if vtype == VT.ARRAY:
            out.append(Site(value_pos, 4, "tag", key + "[type]"))
            out.append(Site(value_pos + 4, 8, "count", key + "[count]"))
        elif vtype == VT.STRING:
            out.append(Site(value_pos, 8, "length", key))
        elif vtype in (VT.FLOAT32, VT.FLOAT64):
            out.append(Site(value_pos, sizes[3], "float", key))
        else:
            out.append(Site(value_pos, sizes[3], "int", key))
    for t in reader.tensors:
        parts = t.field.parts
        pos = t.field.offset
        offsets = []
        for p in parts:
            offsets.append(pos)
            pos += p.nbytes
        out.append(Site(offsets[0], 8, "length", t.name))
        out.append(Site(offsets[2], 4, "count", t.name + "[n_dims]"))
        for i in range(len(parts[3])):
            out.append(Site(offsets[3] + 8 * i, 8, "dims", f"{t.name}[dim {i}]"))
        out.append(Site(offsets[4], 4, "ttype", t.name))
        out.append(Site(offsets[5], 8, "offset", t.name))
    return out


def _value(rng: random.Random, site: Site, old: bytes) -> bytes:
    """A new value for a site: edge cases most of the time, a random one otherwise."""
    if site.kind == "float":
        fmt = "<f" if site.size == 4 else "<d"
        value = rng.choice([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-45, 1e38, rng.uniform(-1e6, 1e6)])
        return struct.pack(fmt, value)
    top = (1 << (8 * site.size)) - 1
    current = int.from_bytes(old, "little")
    choices = [0, 1, top, top >> 1, current + 1, max(current - 1, 0), current * 2, current * 1000,
               rng.randrange(top + 1), rng.randrange(64)]
    if site.kind == "tag":
        choices += list(range(13)) * 2 + [13, 255]
    if site.kind == "ttype":
        choices += [int(t) for t in gguf.GGMLQuantizationType] + [4, 5, 40, 1000]
    if site.kind == "offset":
        choices += [0, current + 1, current + 32, current // 2]
    return (min(rng.choice(choices), top)).to_bytes(site.size, "little")


# ---------------------------------------------------------------------------- well-formed values of the wrong kind

_SCALAR_FORMATS = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I",
                   VT.INT32: "<i", VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}


def _encode(vtype: VT, value) -> bytes:
    if vtype == VT.STRING:
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        return struct.pack("<Q", len(raw)) + raw
    if vtype == VT.ARRAY:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_encode(etype, v) for v in items)
    return struct.pack(_SCALAR_FORMATS[vtype], value)


def _random_value(rng: random.Random):
    """(type, value) of any kind, edge cases first: what a key may hold in a hostile file."""
    kind = rng.choice(["str", "int", "int", "float", "bool", "ints", "strs", "floats", "nested", "empty"])
    if kind == "str":
        return VT.STRING, rng.choice(["", "x", "\n\x1b[31m", "a" * 300, "\ud800", "llama", "gpt2"])
    if kind == "int":
        vtype = rng.choice([VT.UINT32, VT.INT32, VT.UINT64, VT.INT64, VT.UINT8])
        bits = struct.calcsize(_SCALAR_FORMATS[vtype]) * 8
        signed = vtype in (VT.INT32, VT.INT64)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        return vtype, rng.choice([lo, hi, 0, 1, 2, 3, rng.randint(lo, hi)])
    if kind == "float":
        return VT.FLOAT32, rng.choice([math.nan, math.inf, -1.0, 0.0, 1e30])
    if kind == "bool":
        return VT.BOOL, rng.random() < 0.5
    n = rng.choice([0, 1, 3, 300, 1000])
    if kind == "ints":
        return VT.ARRAY, (VT.INT32, [rng.randint(-5, 1000) for _ in range(n)])
    if kind == "strs":
        return VT.ARRAY, (VT.STRING, [rng.choice(["a", "", "<s>", "a b", "\x00"]) for _ in range(n)])
    if kind == "floats":
        return VT.ARRAY, (VT.FLOAT32, [rng.choice([0.0, -1.0, math.nan]) for _ in range(n)])
    if kind == "nested":
        return VT.ARRAY, (VT.ARRAY, [(VT.INT32, [1, 2])] * rng.randint(0, 3))
    return VT.ARRAY, (VT.STRING, [])


def retype(path: str | Path, rng: random.Random) -> tuple[bytes, str]:
    """The file with one metadata key's value replaced by a well-formed value of another kind (and the
    rest re-written as it was): the mutation that reaches the code reading each key."""
    reader = gguf.GGUFReader(path)
    data = Path(path).read_bytes()
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    target = rng.choice(keys)
    kv = b""
    for key in keys:
        field = reader.fields[key]
        if key == target:
            vtype, value = _random_value(rng)
        else:
            vtype, value = field.types[0], field.contents()
            if vtype == VT.ARRAY:
                value = (field.types[-1], value)
        kv += _encode(VT.STRING, key) + struct.pack("<I", vtype) + _encode(vtype, value)
    infos_start = reader.tensors[0].field.offset
    last = reader.tensors[-1].field
    infos_end = last.offset + sum(p.nbytes for p in last.parts)
    alignment = 32
    data_start = min(t.data_offset for t in reader.tensors)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(reader.tensors), len(keys)) + kv + data[infos_start:infos_end]
    head += b"\x00" * (-len(head) % alignment)
    return head + data[data_start:], f"retyped {target} to {vtype.name}"


def mutate(data: bytes, header_end: int, all_sites: list[Site], rng: random.Random,
           path: str | Path | None = None) -> tuple[bytes, str]:
    """One mutant of `data` (the bytes of the valid file at `path`) and a line saying what was done."""
    roll = rng.random()
    if path is not None and roll > 0.7:
        return retype(path, rng)
    if roll < 0.15:  # cut short anywhere
        cut = rng.randrange(len(data))
        return data[:cut], f"truncated to {cut} bytes"
    if roll < 0.35:  # flipped bits in the header
        out = bytearray(data)
        flips = [rng.randrange(header_end) for _ in range(rng.randrange(1, 4))]
        for pos in flips:
            out[pos] ^= 1 << rng.randrange(8)
        return bytes(out), f"bits flipped at {flips}"
    out = bytearray(data)
    changed = []
    for site in rng.sample(all_sites, k=min(len(all_sites), rng.choice([1, 1, 1, 2, 3]))):
        new = _value(rng, site, bytes(out[site.pos : site.pos + site.size]))
        out[site.pos : site.pos + site.size] = new
        changed.append(f"{site.kind} {site.what} = 0x{new[::-1].hex()}")
    return bytes(out), "; ".join(changed)


# ---------------------------------------------------------------------------- probing


@dataclass
class Outcome:
    stage: str  # where it ended: "ok" or the entry point that raised
    error: str = ""  # the GGUFLMError's message, or the traceback of anything else
    clean: bool = True  # only success or one clear GGUFLMError line


def probe(path: str | Path, tokens: int = 2) -> Outcome:
    """Run the file through `gguflm info`'s description, load + generate, the tokenizer and the chat
    template. Success, or a GGUFLMError of one line, is clean; anything else is not."""
    from gguflm.chat.template import ChatTemplate
    from gguflm.errors import GGUFLMError
    from gguflm.gguf_file import open_gguf
    from gguflm.info import describe
    from gguflm.model import load
    from gguflm.tokenizer import Tokenizer

    def info():
        describe(open_gguf(path))

    def run():
        model = load(path, device="cpu")
        model.generate([1, 2, 3][: model.config.n_vocab], tokens)

    def tokenize():
        tok = Tokenizer.from_file(path)
        tok.decode(tok.encode("Hello, world! 123 <s>", parse_special=True))

    def template():
        model = load(path, device="cpu")
        ChatTemplate.for_model(model).render([{"role": "user", "content": "hi"}])

    first_error = None
    for stage, fn in (("info", info), ("run", run), ("tokenizer", tokenize), ("template", template)):
        try:
            fn()
        except GGUFLMError as e:
            if "\n" in str(e) or not str(e):
                return Outcome(stage, repr(str(e)), clean=False)
            first_error = first_error or Outcome(stage, str(e))
        except Exception:  # noqa: BLE001  (what the fuzzer exists to find)
            return Outcome(stage, traceback.format_exc(), clean=False)
    return first_error or Outcome("ok")
