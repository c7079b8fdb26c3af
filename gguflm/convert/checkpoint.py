"""Read a Hugging Face checkpoint directory: config.json and weights, one tensor at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from gguflm.errors import GGUFLMError, printable, shown

# safetensors dtype tags the converter accepts
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


@dataclass(frozen=True)
class TensorSource:
    """One checkpoint tensor, known without reading its data; `read_rows(a, b)` gives rows a..b
    of its 2-D view (first dim x the rest; 1-D is one row), so it is never whole in memory."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    read_rows: Callable[[int, int], torch.Tensor]

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    def load(self) -> torch.Tensor:
        """The whole tensor."""
        return self.read_rows(0, self.n_rows).reshape(self.shape)


def read_config(hf_dir: Path) -> dict:
    """The parsed config.json of `hf_dir`."""
    path = hf_dir / "config.json"
    if not hf_dir.is_dir():
        raise GGUFLMError(f"{hf_dir} is not a directory (expected a Hugging Face checkpoint folder).")
    if not path.is_file():
        raise GGUFLMError(f"{hf_dir} has no config.json, so it is not a Hugging Face checkpoint.")
    return read_json(path)


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a GGUFLMError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GGUFLMError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise GGUFLMError(f"{path} does not hold a JSON object.")
    return value


def list_tensors(hf_dir: Path, *, allow_pickle: bool = False) -> list[TensorSource]:
    """Every weight in the checkpoint, in file order: safetensors (single or sharded), or pytorch_model*.bin
    only with `allow_pickle` (a pickle can run code when it is read; safetensors holds only data)."""
    for stem in ("model.safetensors", "pytorch_model.bin"):
        index = hf_dir / f"{stem}.index.json"
        if index.is_file():
            return _sharded(hf_dir, index, stem.endswith(".bin"), allow_pickle)
    if (hf_dir / "model.safetensors").is_file():
        return _safetensors_file(hf_dir / "model.safetensors")
    shards = sorted(hf_dir.glob("model-*.safetensors"))
    if shards:
        return [t for shard in shards for t in _safetensors_file(shard)]
    if (hf_dir / "pytorch_model.bin").is_file():
        _refuse_pickle(hf_dir / "pytorch_model.bin", allow_pickle)
        return _torch_file(hf_dir / "pytorch_model.bin")
    raise GGUFLMError(f"{hf_dir} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin.")


def _refuse_pickle(path: Path, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise GGUFLMError(f"{path} is a pickle, and reading a pickle can run code the file's author chose; the "
                          "converter reads safetensors, the safe format (pass --allow-pickle if you trust this file).")


def _sharded(hf_dir: Path, index: Path, is_bin: bool, allow_pickle: bool) -> list[TensorSource]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise GGUFLMError(f"{index} has no 'weight_map'.")
    bad = [f for f in weight_map.values() if not _plain_file_name(f)]
    if bad:
        bad = bad[0]
        raise GGUFLMError(f"{index.name}'s weight_map names {shown(str(bad))} as a shard; shards are file names "
                          "in the checkpoint folder.")
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not (hf_dir / f).is_file()]
    if missing:
        raise GGUFLMError(f"checkpoint shard(s) listed in {index.name} are missing: "
                          f"{', '.join(shown(f) for f in missing[:5])}.")
    if is_bin:
        _refuse_pickle(hf_dir / files[0], allow_pickle)
    reader = _torch_file if is_bin else _safetensors_file
    tensors = [t for f in files for t in reader(hf_dir / f)]
    absent = sorted(set(weight_map) - {t.name for t in tensors})
    if absent:
        raise GGUFLMError(f"{index.name} lists tensors that no shard contains: "
                          f"{', '.join(shown(a) for a in absent[:5])}.")
    return tensors


def _plain_file_name(name) -> bool:
    """A shard name the index may give: a file directly in the folder (no path, so no escape from it)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


# ---- safetensors: the library's lazy slices, one positioned read per chunk of rows ----

def _safetensors_file(path: Path) -> list[TensorSource]:
    try:
        with safe_open(str(path), framework="pt") as f:
            entries = [(name, f.get_slice(name)) for name in f.keys()]
            out = [_safetensors_entry(path, name, s.get_dtype(), tuple(s.get_shape())) for name, s in entries]
    except (SafetensorError, OSError) as e:
        raise GGUFLMError(f"{path} is not a valid safetensors file: truncated or corrupt ({first_line(e)}).") from None
    return out


def first_line(e: BaseException) -> str:
    """An exception's message as one escaped line (a library's message may quote the file's bytes)."""
    return printable(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _safetensors_entry(path: Path, name: str, tag: str, shape: tuple[int, ...]) -> TensorSource:
    if tag not in _ST_DTYPES:
        raise GGUFLMError(f"{path}: tensor {shown(name)} has dtype {tag}; supported: {', '.join(_ST_DTYPES)}.")
    count = int(np.prod(shape, dtype=np.int64))
    cols = count // shape[0] if len(shape) > 1 and shape[0] else count

    def read_rows(a: int, b: int) -> torch.Tensor:
        # Opened per chunk so the mapping (and its resident pages) goes away with the chunk.
        try:
            with safe_open(str(path), framework="pt") as f:
                rows = f.get_slice(name)[a:b] if len(shape) > 1 else f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise GGUFLMError(f"{path} is truncated or corrupt at tensor {shown(name)} ({first_line(e)}).") from None
        return rows.reshape(b - a, cols)

    return TensorSource(name, shape, _ST_DTYPES[tag], read_rows)


# ---- pytorch_model.bin: never unpickle arbitrary objects ----

def _torch_file(path: Path) -> list[TensorSource]:
    # weights_only refuses anything but tensors and plain containers; mmap keeps it lazy, but only
    # the zip format (torch >= 1.6) can be mapped, so older files are read whole.
    for mmap in (True, False):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception as e:  # torch raises many unrelated types for a bad or hostile file
            if mmap and "mmap" in str(e):
                continue
            raise GGUFLMError(f"cannot load {path} safely as plain tensors: {first_line(e)}") from None
    if not isinstance(state, dict):
        raise GGUFLMError(f"{path} does not hold a state dict of tensors.")
    out = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise GGUFLMError(f"{path}: entry {shown(str(name))} is not a tensor.")
        rows = t.reshape(t.shape[0] if t.dim() > 1 else 1, -1)
        out.append(TensorSource(name, tuple(t.shape), t.dtype, lambda a, b, rows=rows: rows[a:b].clone()))
    return out
