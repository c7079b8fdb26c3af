"""Mutated Hugging Face checkpoint folders for fuzzing the converter: a valid folder with config.json
values of the wrong type or range, safetensors tensors of other shapes, dtypes or names (or a broken
header), tokenizer.json / tokenizer_config.json fields of the wrong kind, a bad shard index, or a
file cut short. `probe_checkpoint` converts one and says how it ended.

Used by tests/test_fuzz_convert.py (a few dozen mutants per run) and `scripts/fuzz.py --convert`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import traceback
from pathlib import Path

from gguflm.synthetic.mutants import Outcome

_CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "rope_scaling", "rope_parameters", "tie_word_embeddings", "architectures", "bos_token_id",
                "eos_token_id", "model_type")
_ROPE_KEYS = ("rope_type", "type", "factor", "rope_theta", "low_freq_factor", "high_freq_factor",
              "original_max_position_embeddings")
_TOKENIZER_CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "add_prefix_space", "add_bos_token",
                          "add_eos_token", "chat_template", "added_tokens_decoder", "model_max_length")
_TORCH_DTYPES = ("float64", "float16", "bfloat16", "int32", "int64", "uint8", "bool", "float8_e4m3fn")
_ST_TAGS = ("F32", "F16", "BF16", "F64", "I8", "I32", "I64", "U8", "BOOL", "F8_E4M3", "XX", "")


def hostile_value(rng: random.Random, old=None):
    """A JSON value of any kind, edge cases first: what a field may hold in a broken or hostile file."""
    choices = ["", "x", "\n\x1b[31m", "a" * 5000, "\ud800", -1, 0, 1, 3, 2**31, 2**40, 2**64, -(2**63), True, False,
               None, math.nan, math.inf, -math.inf, 1e-45, 0.5, [], [1, 2], [[1]], {}, {"a": 1}, "linear", "llama3",
               "yarn"]
    if isinstance(old, (int, float)) and not isinstance(old, bool) and math.isfinite(old):
        choices += [old * 2, old + 1, old - 1, -old, str(old), float(old), [old]]
    elif old is not None:
        choices += [str(old), [old], {"content": old}]
    return rng.choice(choices)


# ---------------------------------------------------------------------------- per-file mutations

def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")  # ASCII: a lone surrogate is written escaped


def _config(d: Path, rng: random.Random) -> str:
    path = d / "config.json"
    config = _read_json(path)
    key = rng.choice(list(config) + list(_CONFIG_KEYS) * 2)
    if rng.random() < 0.15:
        config.pop(key, None)
        what = f"config.json: deleted {key}"
    elif key in ("rope_scaling", "rope_parameters") and rng.random() < 0.7:
        block = config.get(key) if isinstance(config.get(key), dict) else {}
        sub = rng.choice(_ROPE_KEYS)
        block[sub] = rng.choice(["linear", "yarn", "llama3", "default", "longrope", hostile_value(rng, block.get(sub))])
        config[key] = block
        what = f"config.json: {key}.{sub} = {block[sub]!r}"[:200]
    else:
        config[key] = hostile_value(rng, config.get(key))
        what = f"config.json: {key} = {config[key]!r}"[:200]
    _write_json(path, config)
    return what


def _tensors(d: Path, rng: random.Random) -> str:
    """One tensor re-saved with another shape, dtype or name (a valid safetensors file)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = d / "model.safetensors"
    tensors = load_file(path)
    name = rng.choice(sorted(tensors))
    t = tensors[name]
    op = rng.choice(["flatten", "3d", "rows", "zero", "scalar", "transpose", "dtype", "drop", "rename", "nan"])
    if op == "flatten":
        tensors[name] = t.flatten().clone()
    elif op == "3d" and t.dim() == 2 and t.shape[0] % 2 == 0:
        tensors[name] = t.reshape(2, t.shape[0] // 2, -1).clone()
    elif op == "rows":
        tensors[name] = t[: rng.randrange(1, t.shape[0] + 1) if t.shape[0] > 1 else 1].clone()
    elif op == "zero":
        tensors[name] = t[:0].clone()
    elif op == "scalar":
        tensors[name] = t.flatten()[0].clone()
    elif op == "transpose" and t.dim() == 2:
        tensors[name] = t.t().contiguous()
    elif op == "dtype":
        tensors[name] = t.to(getattr(torch, rng.choice(_TORCH_DTYPES)))
    elif op == "drop":
        del tensors[name]
    elif op == "rename":
        new = rng.choice([name.replace("layers.0", "layers.7"), name + "x", "junk", name.replace(".weight", ".bias"),
                          "model.layers.0.self_attn.q_norm.weight", "\n\x1b[31m"])
        tensors[new] = tensors.pop(name)
        op = f"rename to {new!r}"
    elif op == "nan":
        tensors[name] = torch.full_like(t, math.nan)
    save_file(tensors, path, metadata={"format": "pt"})
    return f"model.safetensors: {name} {op} -> {tuple(tensors[name].shape) if name in tensors else '-'}"


def _safetensors_header(d: Path, rng: random.Random) -> str:
    """The header's JSON edited in place (dtype, shape, offsets) or its length field changed."""
    path = d / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    if rng.random() < 0.2:
        new_n = rng.choice([0, 1, n - 1, n + 1, 2**40, 2**64 - 1, len(data)])
        path.write_bytes(struct.pack("<Q", new_n) + data[8:])
        return f"model.safetensors: header length {n} -> {new_n}"
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry = header[name]
    field = rng.choice(["dtype", "shape", "data_offsets", "entry"])
    if field == "dtype":
        entry["dtype"] = rng.choice(_ST_TAGS)
    elif field == "shape":
        entry["shape"] = rng.choice([[], [0], [0, 64], [2**40, 2**40], [-1], entry["shape"][::-1],
                                     entry["shape"] + [1], entry["shape"][:1], ["a"]])
    elif field == "data_offsets":
        a, b = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b, a], [a, a], [0, b], [a, len(body) + 4], [a + 2, b + 2], [-1, b]])
    else:
        header[name] = hostile_value(rng)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return f"model.safetensors header: {name} {field} = {header[name] if field == 'entry' else entry[field]!r}"[:200]


def _shard_index(d: Path, rng: random.Random) -> str:
    """The weights moved to one shard, with an index whose weight map is edited."""
    from safetensors import safe_open

    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
    shard = "model-00001-of-00001.safetensors"
    (d / "model.safetensors").rename(d / shard)
    weight_map = {n: shard for n in names}
    op = rng.choice(["value", "missing", "extra", "map"])
    if op == "value":
        weight_map[rng.choice(names)] = rng.choice([1, None, "../config.json", "/etc/passwd", "", "nope.safetensors",
                                                    "config.json", [shard]])
    elif op == "missing":
        del weight_map[rng.choice(names)]
    elif op == "extra":
        weight_map["model.layers.9.mlp.up_proj.weight"] = shard
    else:
        weight_map = hostile_value(rng)
    _write_json(d / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    return f"shard index: {op}"


def _tokenizer_json(d: Path, rng: random.Random) -> str:
    path = d / "tokenizer.json"
    spec = _read_json(path)
    model = spec.get("model", {})
    op = rng.choice(["vocab entry", "vocab", "merge", "merges", "added entry", "added", "pre", "model type",
                     "post", "delete"])
    if op == "vocab entry" and model.get("vocab"):
        key = rng.choice(sorted(model["vocab"]))
        model["vocab"][key] = hostile_value(rng, model["vocab"][key])
    elif op == "vocab":
        model["vocab"] = hostile_value(rng, model.get("vocab"))
    elif op == "merge" and model.get("merges"):
        i = rng.randrange(len(model["merges"]))
        model["merges"][i] = rng.choice([hostile_value(rng), ["a", "b", "c"], [1, 2], "a", "a b c"])
    elif op == "merges":
        model["merges"] = hostile_value(rng, model.get("merges"))
    elif op == "added entry" and spec.get("added_tokens"):
        entry = rng.choice(spec["added_tokens"])
        key = rng.choice(["id", "content", "special"])
        entry[key] = hostile_value(rng, entry.get(key))
    elif op == "added":
        spec["added_tokens"] = hostile_value(rng, spec.get("added_tokens"))
    elif op == "pre":
        spec["pre_tokenizer"] = rng.choice([hostile_value(rng),
                                            {"type": "Sequence", "pretokenizers": hostile_value(rng)},
                                            {"type": "ByteLevel", "use_regex": hostile_value(rng)}])
    elif op == "model type":
        model["type"] = rng.choice(["WordPiece", "Unigram", 5, None])
    elif op == "post":
        spec["post_processor"] = rng.choice([hostile_value(rng), {"type": "TemplateProcessing",
                                                                   "single": hostile_value(rng)}])
    else:
        spec.pop(rng.choice(sorted(spec)), None)
    _write_json(path, spec)
    return f"tokenizer.json: {op}"


def _tokenizer_config(d: Path, rng: random.Random) -> str:
    path = d / "tokenizer_config.json"
    tc = _read_json(path)
    key = rng.choice(_TOKENIZER_CONFIG_KEYS)
    if key == "added_tokens_decoder" and isinstance(tc.get(key), dict) and tc[key] and rng.random() < 0.6:
        i = rng.choice(sorted(tc[key]))
        tc[key][rng.choice([i, "-1", "x", "99999"])] = rng.choice([hostile_value(rng), {"content": hostile_value(rng)}])
        what = f"tokenizer_config.json: added_tokens_decoder[{i}]"
    else:
        tc[key] = hostile_value(rng, tc.get(key))
        what = f"tokenizer_config.json: {key} = {tc[key]!r}"[:200]
    _write_json(path, tc)
    return what


_GENERATION_KEYS = ("eos_token_id", "bos_token_id", "top_k", "top_p", "min_p", "temperature", "penalty_last_n",
                    "penalty_repeat", "mirostat", "sequence")


def _generation_config(d: Path, rng: random.Random) -> str:
    path = d / "generation_config.json"
    gc = _read_json(path)
    key = rng.choice(_GENERATION_KEYS)
    gc[key] = hostile_value(rng, gc.get(key))
    _write_json(path, gc)
    return f"generation_config.json: {key} = {gc[key]!r}"[:200]


def _model_card(d: Path, rng: random.Random) -> str:
    """A README.md whose YAML front matter (read for general.* keys) holds a hostile value."""
    key = rng.choice(["license", "tags", "base_model", "language", "datasets", "model_name", "pipeline_tag"])
    value = rng.choice([json.dumps(hostile_value(rng)), "[unclosed", "{a: [1, {b: }", "!!python/object:os.system",
                        "\xff", "&a [*a]"])
    (d / "README.md").write_text(f"---\n{key}: {value}\n---\n# model\n", encoding="utf-8")
    return f"README.md: {key}: {value[:60]!r}"


def _broken_file(d: Path, rng: random.Random) -> str:
    path = rng.choice(sorted(p for p in d.iterdir() if p.is_file()))
    data = path.read_bytes()
    if rng.random() < 0.6:
        cut = rng.randrange(len(data) + 1)
        path.write_bytes(data[:cut])
        return f"{path.name} cut to {cut} bytes"
    pos = rng.randrange(max(1, min(len(data), 4096)))
    path.write_bytes(data[:pos] + bytes([rng.choice([0x00, 0xff, 0xc3, 0x80])]) + data[pos + 1:])
    return f"{path.name}: a byte at {pos} replaced"


# (the file a mutation edits, or None for one it writes; the mutation; its weight)
_MUTATIONS = (
    ("config.json", _config, 4), ("model.safetensors", _tensors, 2), ("model.safetensors", _safetensors_header, 1),
    ("model.safetensors", _shard_index, 1), ("tokenizer.json", _tokenizer_json, 2),
    ("tokenizer_config.json", _tokenizer_config, 2), ("generation_config.json", _generation_config, 1),
    (None, _model_card, 1), (None, _broken_file, 1),
)


def mutate_checkpoint(base: Path, out: Path, rng: random.Random) -> str:
    """Copy the valid checkpoint folder `base` to `out` with one to three mutations; say what was done."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        options = [(fn, w) for name, fn, w in _MUTATIONS if name is None or (out / name).is_file()]
        fns, weights = zip(*options)
        fn = rng.choices(fns, weights)[0]
        try:
            done.append(fn(out, rng))
        except Exception:  # noqa: BLE001  (an earlier mutation already broke the file this one reads)
            done.append(f"{fn.__name__.strip('_')} skipped: the file no longer parses")
    return "; ".join(done)


# ---------------------------------------------------------------------------- probing


def probe_checkpoint(folder: Path, out: Path, outtype: str = "f16") -> Outcome:
    """Convert `folder` to `out`. Clean: success with a file gguflm loads, runs and tokenizes, or a
    GGUFLMError of one line with no file (or part) left behind."""
    from gguflm.convert import convert_checkpoint
    from gguflm.errors import GGUFLMError
    from gguflm.model import load

    leftovers = lambda: [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # noqa: E731
    out.unlink(missing_ok=True)
    try:
        convert_checkpoint(folder, out, outtype)
    except GGUFLMError as e:
        if "\n" in str(e) or not str(e):
            return Outcome("convert", repr(str(e)), clean=False)
        if out.exists() or leftovers():
            return Outcome("convert", f"failed ({e}) but left a file behind", clean=False)
        return Outcome("convert", str(e))
    except Exception:  # noqa: BLE001  (what the fuzzer exists to find)
        return Outcome("convert", traceback.format_exc(), clean=False)
    try:
        model = load(out, device="cpu")
        model.generate([1, 2, 3][: model.config.n_vocab], 1)
        if model.has_tokenizer:
            model.tokenizer.decode(model.tokenizer.encode("Hello, world! 123", parse_special=True))
    except Exception:  # noqa: BLE001  (a GGUFLMError here too: the converter wrote a file gguflm rejects)
        return Outcome("output", traceback.format_exc(), clean=False)
    return Outcome("ok")
