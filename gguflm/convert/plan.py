"""Decide, before reading any weight data, every output tensor's name, shape and GGML type."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import torch
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as FT

from gguflm import arch as archs
from gguflm.arch import Architecture, T, tensor_name
from gguflm.convert import hparams as H
from gguflm.convert import validate
from gguflm.convert.checkpoint import TensorSource, list_tensors, read_config
from gguflm.errors import GGUFLMError
from gguflm.quantize.mixes import MIXES, ModelFacts, rule_layers
from gguflm.quantize.mixes import tensor_type as mix_tensor_type

# The converter's own types (every 2-D weight in one type, as llama.cpp's converter writes them) ...
OUTTYPES: dict[str, tuple[FT, Q]] = {
    "f32": (FT.ALL_F32, Q.F32),
    "f16": (FT.MOSTLY_F16, Q.F16),
    "bf16": (FT.MOSTLY_BF16, Q.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, Q.Q8_0),
}
# ... and llama-quantize's mixes, straight from the checkpoint with its per-tensor rules.
MIX_OUTTYPES = {name.lower(): mix for name, mix in MIXES.items() if name.lower() not in OUTTYPES}
OUTTYPES |= {name: (mix.file_type, mix.default) for name, mix in MIX_OUTTYPES.items()}
# Order within a block (llama.cpp's), so sharded and single-file checkpoints give byte-identical files.
_BLOCK_ORDER = tuple(gguf.TENSOR_NAMES[t].split(".")[-1] for t in archs.LAYER_ORDER)


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: `shape` is torch order (rows, row_length); `heads` set means permute Q/K rows."""

    name: str
    shape: tuple[int, ...]
    qtype: Q
    source: TensorSource | None = None
    heads: int | None = None
    generated: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass(frozen=True)
class ConversionPlan:
    """Everything `convert_checkpoint` writes, resolved up front (also what `--dry-run` prints)."""

    hf_dir: Path
    config: dict
    arch: Architecture
    outtype: str  # resolved: never "auto"
    file_type: FT
    tensors: tuple[PlannedTensor, ...]

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(int(torch.Size(t.shape).numel()) for t in self.tensors)


def resolve_outtype(outtype: str, sources: list[TensorSource]) -> str:
    """`auto` becomes the first 2-D weight's 16-bit type (bf16 or f16), else f16, as llama.cpp does."""
    if outtype != "auto":
        if outtype not in OUTTYPES:
            raise GGUFLMError(f"unknown outtype {outtype!r}; choose from {', '.join(OUTTYPES)}, auto.")
        return outtype
    for s in sources:
        if len(s.shape) >= 2:
            return "bf16" if s.dtype == torch.bfloat16 else "f16"
    return "f16"


def tensor_type(name: str, shape: tuple[int, ...], default: Q) -> Q:
    """llama.cpp's rule: 1-D, norms and non-weights stay F32; Q8_0 rows not a multiple of 32 fall back to F16."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return Q.F32
    block, _ = gguf.GGML_QUANT_SIZES[default]
    if shape[-1] % block != 0:
        return Q.F16
    return default


def make_plan(hf_dir: Path, outtype: str = "f32", *, vocab_only: bool = False,
              allow_pickle: bool = False) -> ConversionPlan:
    """Read config and tensor headers of `hf_dir` and decide every output tensor."""
    hf_dir = Path(hf_dir)
    config = read_config(hf_dir)
    arch = H.architecture_for(config)
    H.check_config(config)
    sources = [] if vocab_only else list_tensors(hf_dir, allow_pickle=allow_pickle)
    validate.check_sources(config, sources)
    outtype = resolve_outtype(outtype, sources)
    file_type, default = OUTTYPES[outtype]
    if vocab_only:
        return ConversionPlan(hf_dir, config, arch, outtype, file_type, ())
    n_layers = config["num_hidden_layers"]
    tied = bool(config.get("tie_word_embeddings", False))
    planned: list[PlannedTensor] = []
    if (factors := H.llama3_rope_factors(config)) is not None:
        planned.append(PlannedTensor(tensor_name(T.ROPE_FREQS), tuple(factors.shape), Q.F32, generated=factors))
    for src in sources:
        name = H.gguf_name(arch, n_layers, src.name)
        if name is None or (tied and name == tensor_name(T.OUTPUT)):  # tied heads reuse token_embd
            continue
        heads = H.qk_heads(config, name) if arch.permute_qk else None
        planned.append(PlannedTensor(name, src.shape, tensor_type(name, src.shape, default), src, heads))
    _check_complete(planned, config)
    if outtype in MIX_OUTTYPES:
        planned = _mixed_types(planned, config, arch, outtype)
    planned.sort(key=_order)
    plan = ConversionPlan(hf_dir, config, arch, outtype, file_type, tuple(planned))
    validate.check_plan(plan)
    return plan


def _mixed_types(planned: list[PlannedTensor], config: dict, arch: Architecture, outtype: str) -> list[PlannedTensor]:
    """Each tensor's type under llama-quantize's rules for the mix, as `gguflm quantize` gives it."""
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    facts = ModelFacts(arch.name, config["num_hidden_layers"], max(1, heads // kv),
                       tied=tensor_name(T.OUTPUT) not in {t.name for t in planned})
    layers = rule_layers([t.name for t in planned])
    mix = MIX_OUTTYPES[outtype]
    return [replace(t, qtype=mix_tensor_type(t.name, tuple(reversed(t.shape)), layers[t.name], facts, mix,
                                             current=Q.F32))
            for t in planned]


def _check_complete(planned: list[PlannedTensor], config: dict) -> None:
    names = {t.name for t in planned}
    if len(names) != len(planned):
        raise GGUFLMError("the checkpoint maps two tensors to the same GGUF name.")
    # output.weight may be absent even untied: llama.cpp then reuses token_embd, and so do loaders.
    needed = [tensor_name(T.TOKEN_EMBD), tensor_name(T.OUTPUT_NORM)]
    for i in range(config["num_hidden_layers"]):
        needed += [tensor_name(t, i) for t in archs.REQUIRED_LAYER]
    missing = [n for n in needed if n not in names]
    if missing:
        raise GGUFLMError(f"the checkpoint lacks {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}.")


def _order(t: PlannedTensor) -> tuple:
    parts = t.name.split(".")
    if parts[0] == "blk":
        kind = parts[2]
        rank = _BLOCK_ORDER.index(kind) if kind in _BLOCK_ORDER else len(_BLOCK_ORDER)
        return (2, int(parts[1]), rank, t.name)
    top = {gguf.TENSOR_NAMES[t]: rank for t, rank in ((T.ROPE_FREQS, 0), (T.TOKEN_EMBD, 1), (T.OUTPUT_NORM, 3),
                                                      (T.OUTPUT, 4))}
    return (top.get(parts[0], 5), 0, 0, t.name)
