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


def mutate(data: bytes, header_end: int, all_sites: list[Site], rng: random.Random) -> tuple[bytes, str]:
    """One mutant of `data` and a line saying what was done to it."""
    roll = rng.random()
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
