"""`quantize_file`: rewrite a GGUF file with llama-quantize's per-tensor types, one tensor at a time.

Metadata is copied byte for byte (general.file_type and general.quantization_version set, split
keys dropped); tensors keep their order; each is expanded to float32 and re-encoded a bounded
chunk of rows at a time, so peak memory is a chunk, not the model. The file appears under its
name only when complete (gguflm.files.atomic_write): an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

from gguflm.errors import GGUFLMError
from gguflm.files import atomic_write
from gguflm.gguf_file import GGUFFile, TensorInfo, open_gguf
from gguflm.quantize import gguf_raw
from gguflm.quantize.blocks import quantize_rows, row_bytes
from gguflm.quantize.mixes import Mix, MixOptions, ModelFacts, get_mix, layer_of, rule_layers, tensor_type

log = logging.getLogger(__name__)
QT = gguf.GGMLQuantizationType
FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)
CHUNK_BYTES = 16 * 1024 * 1024  # float32 bytes of one chunk of rows
_DROPPED = {gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.Split.LLM_KV_SPLIT_NO,
            gguf.Keys.Split.LLM_KV_SPLIT_COUNT, gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT}


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # ggml order, row length first
    source: QT
    target: QT

    @property
    def nbytes(self) -> int:
        rows = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        return rows * row_bytes(self.target, self.shape[0])


@dataclass
class QuantizeResult:
    path: Path
    mix: Mix
    tensors: list[TensorPlan]
    source_bytes: int
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def type_table(self) -> dict[str, str]:
        return {t.name: t.target.name for t in self.tensors}


# ---------------------------------------------------------------------------- planning

def model_facts(src: GGUFFile) -> ModelFacts:
    arch = src.architecture
    n_layers = src.get(f"{arch}.block_count", 0, int)
    heads = src.get(f"{arch}.attention.head_count", 1)
    kv = src.get(f"{arch}.attention.head_count_kv", heads)
    gqa = heads // kv if isinstance(heads, int) and isinstance(kv, int) and kv > 0 else 1
    experts = src.get(f"{arch}.expert_count", 0)
    return ModelFacts(arch, n_layers, gqa, experts if isinstance(experts, int) else 0,
                      tied="output.weight" not in src.tensors)


def plan_tensors(src: GGUFFile, mix: Mix, options: MixOptions = MixOptions()) -> list[TensorPlan]:
    """Every tensor's target type under `mix` (what `--dry-run` prints), in llama-quantize's order:
    by block index (the others first), then by name, so the file is the one llama-quantize writes."""
    facts = model_facts(src)
    layers = rule_layers(list(src.tensors))
    order = sorted(src.tensors.values(), key=lambda t: (layer_of(t.name), t.name))
    return [TensorPlan(t.name, t.shape, t.tensor_type,
                       tensor_type(t.name, t.shape, layers[t.name], facts, mix, options, t.tensor_type))
            for t in order]


def check_requantize(plan: list[TensorPlan], allow: bool) -> list[TensorPlan]:
    """The tensors re-encoded from an already quantized type; an error unless `allow`."""
    again = [t for t in plan if t.source != t.target and t.source not in FLOAT_TYPES]
    if again and not allow:
        kinds = sorted({t.source.name for t in again})
        raise GGUFLMError(f"the source is already quantized ({len(again)} tensors of {', '.join(kinds)}); "
                          f"pass --allow-requantize to quantize it again (the losses add up).")
    return again


# ---------------------------------------------------------------------------- encoding

def source_rows(info: TensorInfo, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of a 2-D view of the tensor, as float32 (dequantized with gguf-py if quantized)."""
    k = info.shape[0]
    data = info.data.reshape(-1, info.data.shape[-1])[a:b]
    if info.tensor_type == QT.F32:
        return np.asarray(data, dtype=np.float32)
    if info.tensor_type == QT.F16:
        return data.astype(np.float32)
    if info.tensor_type == QT.BF16:
        return (np.ascontiguousarray(data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return gguf.quants.dequantize(np.ascontiguousarray(data), info.tensor_type).reshape(-1, k)


def encode_tensor(info: TensorInfo, target: QT) -> Iterator[bytes | np.ndarray]:
    """The tensor's bytes in `target`, a chunk of rows at a time; unchanged types are copied as they are."""
    data = info.data
    if target == info.tensor_type:
        yield np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return
    rows = int(np.prod(info.shape[1:])) if len(info.shape) > 1 else 1
    step = max(1, CHUNK_BYTES // (4 * info.shape[0]))
    for a in range(0, rows, step):
        try:
            yield quantize_rows(source_rows(info, a, min(rows, a + step)), target).reshape(-1)
        except GGUFLMError as e:
            raise GGUFLMError(f"tensor {info.name}: {e}") from None


def quantize_file(src_path: str | Path, out_path: str | Path, type_name: str, *, options: MixOptions = MixOptions(),
                  allow_requantize: bool = False, progress: bool = False) -> QuantizeResult:
    """Quantize the GGUF at `src_path` to `out_path` with the llama-quantize mix `type_name`."""
    mix = get_mix(type_name)
    src_path, out_path = Path(src_path), Path(out_path)
    if not out_path.parent.expanduser().is_dir():
        raise GGUFLMError(f"the output directory {str(out_path.parent)!r} does not exist.")
    if out_path.is_dir():
        raise GGUFLMError(f"output path {str(out_path)!r} is a directory.")
    src = open_gguf(src_path)
    if out_path.exists() and out_path.resolve() == src_path.resolve():
        raise GGUFLMError("the output path is the input file; write the quantized model to another name.")
    plan = plan_tensors(src, mix, options)
    if check_requantize(plan, allow_requantize):
        log.warning("requantizing an already quantized model: its rounding errors add to the new ones")
    result = QuantizeResult(out_path, mix, plan, sum(t.n_bytes for t in src.tensors.values()))
    start = time.perf_counter()
    with atomic_write(out_path, "the quantized GGUF file") as tmp:
        write_tensors(tmp, src, mix, plan, progress)
    result.seconds = time.perf_counter() - start
    for t in plan:
        result.counts[t.target.name] = result.counts.get(t.target.name, 0) + 1
    return result


def write_tensors(tmp: Path, src: GGUFFile, mix: Mix, plan: list[TensorPlan], progress: bool = False) -> None:
    """Write `src`'s metadata and its tensors encoded as `plan` says to `tmp` (not atomically: the caller's job)."""
    entries = [raw for key, raw in gguf_raw.metadata_entries(src.path).items() if key not in _DROPPED]
    entries += [gguf_raw.u32_entry(gguf.Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION),
                gguf_raw.u32_entry(gguf.Keys.General.FILE_TYPE, int(mix.file_type))]
    alignment = src.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    infos, offset = [], 0
    for t in plan:
        infos.append(gguf_raw.tensor_info(t.name, t.shape, int(t.target), offset))
        offset = gguf_raw.padded(offset + t.nbytes, alignment)
    head = gguf_raw.header(len(plan), entries) + b"".join(infos)
    bar = _progress_bar(src, len(plan)) if progress else None
    try:
        with open(tmp, "wb") as f:
            f.write(head + bytes(gguf_raw.padded(len(head), alignment) - len(head)))
            for i, t in enumerate(plan):
                info = src.tensors[t.name]
                if bar is not None:
                    bar.set_postfix_str(f"{i + 1}/{len(plan)} {t.name} -> {t.target.name}", refresh=False)
                written = 0
                for chunk in encode_tensor(info, t.target):
                    f.write(memoryview(chunk))
                    written += chunk.nbytes
                    if bar is not None:
                        bar.update(chunk.nbytes * info.n_bytes // max(1, t.nbytes))
                if written != t.nbytes:
                    raise GGUFLMError(f"tensor {t.name} encoded to {written} bytes, expected {t.nbytes}.")
                f.write(bytes(gguf_raw.padded(written, alignment) - written))
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(src: GGUFFile, n: int):
    from tqdm import tqdm

    total = sum(t.n_bytes for t in src.tensors.values())
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                desc=f"quantizing ({n} tensors)", dynamic_ncols=True)
