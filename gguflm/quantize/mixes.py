"""llama-quantize's file types and its per-tensor type rules (llama-quant.cpp's llama_tensor_get_type).

`tensor_type` is a pure function of one tensor (name, ggml shape, layer), a few model facts and
the chosen mix; it gives the type llama-quantize picks for the same tensor (no importance
matrix). The rules are the ones llama.cpp applies for the mixes gguflm offers (the IQ1/IQ2/IQ3
and ternary mixes, which need an importance matrix or formats gguflm does not write, are left out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

from gguflm.errors import GGUFLMError

QT = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType


@dataclass(frozen=True)
class Mix:
    """One llama-quantize type name: the file type written to general.file_type and the default tensor type."""

    name: str
    file_type: FT
    default: QT

    @property
    def quantized(self) -> bool:
        return self.default not in (QT.F32, QT.F16, QT.BF16)


MIXES: dict[str, Mix] = {m.name: m for m in (
    Mix("Q4_0", FT.MOSTLY_Q4_0, QT.Q4_0), Mix("Q4_1", FT.MOSTLY_Q4_1, QT.Q4_1),
    Mix("Q5_0", FT.MOSTLY_Q5_0, QT.Q5_0), Mix("Q5_1", FT.MOSTLY_Q5_1, QT.Q5_1),
    Mix("IQ4_NL", FT.MOSTLY_IQ4_NL, QT.IQ4_NL), Mix("IQ4_XS", FT.MOSTLY_IQ4_XS, QT.IQ4_XS),
    Mix("Q2_K", FT.MOSTLY_Q2_K, QT.Q2_K),
    Mix("Q3_K_S", FT.MOSTLY_Q3_K_S, QT.Q3_K), Mix("Q3_K_M", FT.MOSTLY_Q3_K_M, QT.Q3_K),
    Mix("Q3_K_L", FT.MOSTLY_Q3_K_L, QT.Q3_K),
    Mix("Q4_K_S", FT.MOSTLY_Q4_K_S, QT.Q4_K), Mix("Q4_K_M", FT.MOSTLY_Q4_K_M, QT.Q4_K),
    Mix("Q5_K_S", FT.MOSTLY_Q5_K_S, QT.Q5_K), Mix("Q5_K_M", FT.MOSTLY_Q5_K_M, QT.Q5_K),
    Mix("Q6_K", FT.MOSTLY_Q6_K, QT.Q6_K), Mix("Q8_0", FT.MOSTLY_Q8_0, QT.Q8_0),
    Mix("F16", FT.MOSTLY_F16, QT.F16), Mix("BF16", FT.MOSTLY_BF16, QT.BF16), Mix("F32", FT.ALL_F32, QT.F32),
)}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize accepts them


def get_mix(name: str) -> Mix:
    """The mix of a llama-quantize type name (any case), or one sentence listing the names."""
    key = ALIASES.get(name.upper(), name.upper())
    if key not in MIXES:
        raise GGUFLMError(f"unknown quantization type {name!r}; choose from {', '.join(MIXES)}.")
    return MIXES[key]


def tensor_qtype(name: str) -> QT:
    """A ggml tensor type by name (for --output-tensor-type / --token-embedding-type)."""
    from gguflm.quantize.blocks import QUANTIZERS

    try:
        qt = QT[name.upper()]
    except KeyError:
        qt = None
    if qt not in QUANTIZERS:
        raise GGUFLMError(f"unknown tensor type {name!r}; choose from {', '.join(t.name for t in QUANTIZERS)}.")
    return qt


@dataclass(frozen=True)
class ModelFacts:
    """What the rules read about the whole model (llama.cpp's hparams and tensor counts)."""

    arch: str
    n_layers: int
    n_gqa: int = 1  # n_head / n_head_kv
    n_expert: int = 0
    tied: bool = False  # no output.weight: token_embd doubles as the head and is treated like it

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B: 80 layers with grouped KV heads (llama) or 80 layers (qwen2)."""
        return self.n_layers == 80 and (self.arch == "qwen2" or (self.arch == "llama" and self.n_gqa > 1))


@dataclass(frozen=True)
class MixOptions:
    output_type: QT | None = None  # --output-tensor-type
    token_embedding_type: QT | None = None  # --token-embedding-type
    pure: bool = False  # --pure: the default type everywhere (row-length fallbacks still apply)
    quantize_output: bool = True  # False: llama-quantize's --leave-output-tensor


# ---------------------------------------------------------------------------- categories

def category(name: str) -> str:
    """llama.cpp's tensor_get_category: output, token_embd, attn_v (qkv, kv_b), attn_k, ..., other."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    # attn_qkv and attn_kv_b count as attn_v: llama.cpp tests attn_v-like first, so its own
    # ATTENTION_QKV rules are never reached.
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                     ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                     ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


_NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                    "ssm_conv1d", "shortconv.conv.weight", "time_mix_", "attn_rel_b.weight", ".position_embd",
                    ".rel_pos", ".patch_embd", ".patch_merger")


def allows_quantization(name: str, shape: tuple[int, ...], options: MixOptions = MixOptions()) -> bool:
    """llama.cpp's tensor_allows_quantization: 2-D+ weights, not norms, gates of experts, positions..."""
    if len(shape) < 2 or not name.endswith("weight"):
        return False
    if name == "output.weight" and not options.quantize_output:
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(part in name for part in _NEVER_QUANTIZED)


# ---------------------------------------------------------------------------- the rules

def layer_of(name: str) -> int:
    """The block index of a `blk.N.` tensor, -1 for the others (llama.cpp's weight_name_comparer)."""
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def rule_layers(names: list[str]) -> dict[str, int]:
    """The layer index llama.cpp's rules see: for attn_v-like and ffn_down tensors the count of
    earlier ones in its (layer, name) order (i_attention_wv, i_ffn_down), else the block index."""
    order = sorted(names, key=lambda n: (layer_of(n), n))
    seen: dict[str, int] = {}
    out = {}
    for n in order:
        cat = category(n)
        if cat in ("attn_v", "ffn_down"):
            out[n] = seen.get(cat, 0)
            seen[cat] = out[n] + 1
        else:
            out[n] = layer_of(n)
    return out


def _more_bits(i: int, n: int) -> bool:
    """The layers llama.cpp gives more bits: the first and last eighth, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mixed(name: str, ne0: int, layer: int, facts: ModelFacts, mix: Mix, options: MixOptions) -> QT:
    """llama_tensor_get_type_impl for the mixes in MIXES: the type before the row-length fallback."""
    ft, new = mix.file_type, mix.default
    cat = category(name)
    n = facts.n_layers
    if cat == "output" or (facts.tied and cat == "token_embd"):
        if options.output_type is not None:
            return options.output_type
        if facts.arch == "falcon" or ne0 % gguf.GGML_QUANT_SIZES[new][0]:
            return QT.Q8_0
        return new if new == QT.Q8_0 else QT.Q6_K
    if cat == "token_embd":  # (an explicit --token-embedding-type was applied before the rules)
        return new
    if cat == "attn_v":  # `layer` is llama.cpp's i_attention_wv: the index among attn_v-like tensors
        gqa4 = facts.n_gqa >= 4
        if ft == FT.MOSTLY_Q2_K:
            new = QT.Q4_K if gqa4 else QT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new = QT.Q5_K if layer < 2 else QT.Q4_K
        elif ft == FT.MOSTLY_Q3_K_L:
            new = QT.Q5_K
        elif ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and gqa4:
            new = QT.Q5_K
        elif ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _more_bits(layer, n):
            new = QT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and layer < 4:
            new = QT.Q5_K
        if facts.is_70b and new in (QT.Q3_K, QT.Q4_K):
            new = QT.Q5_K
        if facts.n_expert == 8:
            new = QT.Q8_0
        return new
    if cat == "attn_k":
        return QT.Q8_0 if facts.n_expert == 8 else new
    if cat == "ffn_down":
        falcon = facts.arch == "falcon"
        if ft == FT.MOSTLY_Q2_K:
            new = QT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new = QT.Q5_K if layer < n // 16 else QT.Q4_K if not falcon or _more_bits(layer, n) else QT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_L:
            new = QT.Q4_K if falcon else QT.Q5_K
        elif ft == FT.MOSTLY_Q4_K_M:
            if falcon:
                new = QT.Q6_K if layer < n // 16 else QT.Q5_K if _more_bits(layer, n) else QT.Q4_K
            elif _more_bits(layer, n):
                new = QT.Q6_K
        elif layer < n // 8 and ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS):  # no importance matrix
            new = QT.Q5_K
        elif ft == FT.MOSTLY_Q5_K_M and _more_bits(layer, n):
            new = QT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and not falcon and layer < n // 8:
            new = QT.Q5_K
        return new
    if cat == "attn_output":
        if facts.arch == "falcon":
            return QT.Q4_K if ft == FT.MOSTLY_Q3_K_L else new
        if facts.n_expert == 8:
            moe5 = (FT.MOSTLY_Q2_K, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M, FT.MOSTLY_IQ4_NL, FT.MOSTLY_Q4_K_S,
                    FT.MOSTLY_Q4_K_M, FT.MOSTLY_IQ4_XS)
            return QT.Q5_K if ft in moe5 else new
        return {FT.MOSTLY_Q2_K: QT.Q3_K, FT.MOSTLY_Q3_K_M: QT.Q4_K, FT.MOSTLY_Q3_K_L: QT.Q5_K}.get(ft, new)
    return new


_FALLBACK = {QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0,
             QT.IQ4_XS: QT.IQ4_NL}


def fallback(qtype: QT, ne0: int) -> QT:
    """llama.cpp's tensor_type_fallback: a 256-block type on rows that are not a multiple of 256
    becomes its 32-block neighbour, and a type whose blocks still do not fit becomes F16."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if ne0 % block == 0:
        return qtype
    new = _FALLBACK.get(qtype, qtype)
    return QT.F16 if ne0 % gguf.GGML_QUANT_SIZES[new][0] else new


def tensor_type(name: str, shape: tuple[int, ...], layer: int, facts: ModelFacts, mix: Mix,
                options: MixOptions = MixOptions(), current: QT = QT.F32) -> QT:
    """The type llama-quantize writes for one tensor (`shape` in ggml order, row length first;
    `layer` its block index; `current` its type in the source, kept where quantizing is not allowed)."""
    if not allows_quantization(name, shape, options):
        return current
    cat = category(name)
    if options.token_embedding_type is not None and cat == "token_embd":
        return options.token_embedding_type
    if options.output_type is not None and cat == "output":
        return options.output_type
    if not mix.quantized:
        return mix.default
    new = mix.default if options.pure else _mixed(name, shape[0], layer, facts, mix, options)
    return fallback(new, shape[0])
