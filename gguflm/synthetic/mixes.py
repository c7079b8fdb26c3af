"""Per-tensor types of synthetic benchmark files: a tensor type name (Q6_K, Q4_0, ...) puts every matrix
in that type; a llama-quantize mix name that is no tensor type (Q4_K_M, Q5_K_S, Q3_K_L, ...) gives each
tensor the type `gguflm quantize` gives it (`gguflm.quantize.mixes`, llama.cpp's rules)."""

from __future__ import annotations

import gguf

from gguflm.errors import GGUFLMError
from gguflm.quantize import mixes as rules

QT = gguf.GGMLQuantizationType


def is_mix(name: str) -> bool:
    """Whether `name` is a llama-quantize mix rather than one tensor type."""
    return name.upper() in rules.MIXES and name.upper() not in QT.__members__


def tensor_type(mix: str, name: str, n_layers: int, cols: int, arch: str = "llama", n_gqa: int = 1) -> str:
    """The type of file tensor `name` (a 2-D weight, rows of `cols` weights) in `mix`. A plain type keeps
    to itself except where a row is not a multiple of its block (llama.cpp's fallback, as in a mix)."""
    if not is_mix(mix):
        return rules.fallback(QT[mix.upper()], cols).name
    facts = rules.ModelFacts(arch, n_layers, n_gqa)
    layer = rules.layer_of(name)  # one attn_v and one ffn_down per layer: llama.cpp's counters are the index
    return rules.tensor_type(name, (cols, 2), layer, facts, rules.get_mix(mix)).name


def check(mix: str) -> str:
    """A mix or type name a synthetic file can be written in (upper case), or a GGUFLMError listing them."""
    from gguflm import quants
    from gguflm.synthetic import RANDOM_BLOCKS, QUANTIZED, kblocks

    name = mix.upper()
    types = [f.name for f in quants.FORMATS.values()
             if kblocks.supports(f.ggml_type) or f.name in (*RANDOM_BLOCKS, *QUANTIZED, "F16", "F32")]
    mixes = [m for m in rules.MIXES if is_mix(m)]
    if name not in mixes and name not in types:
        known = ", ".join(m.lower() for m in [*mixes, *types])
        raise GGUFLMError(f"unknown synthetic model type '{mix}' (known: {known})")
    return name
