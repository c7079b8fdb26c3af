"""One record per `general.architecture`: everything the loader, converter, synthetic models and
`gguflm info` need to know about an architecture, in one place.

Adding an architecture that fits the llama block (RMSNorm, attention with RoPE, SwiGLU) is one
`Architecture` here plus its tests; tensor names come from gguf-py's constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from gguflm.errors import GGUFLMError, shown
from gguflm.registry import Registry

K = gguf.Keys
T = gguf.MODEL_TENSOR


def tensor_name(tensor: gguf.MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    """The file name of a tensor from gguf-py's table: `blk.{layer}.attn_q.weight`, `output_norm.weight`."""
    base = gguf.TENSOR_NAMES[tensor]
    return (base.format(bid=layer) if layer is not None else base) + "." + suffix


# ---------------------------------------------------------------------------- the llama block's tensors

# Per-layer tensors, in the order llama.cpp's converter writes them.
LAYER_ORDER = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_Q_NORM, T.ATTN_K_NORM, T.ATTN_OUT,
               T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
REQUIRED_LAYER = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_NORM, T.FFN_GATE, T.FFN_UP,
                  T.FFN_DOWN)
# Optional per-layer tensors, by what they do: extra -> (tensor, suffix) pairs.
QKV_BIAS = "qkv_bias"  # attn_q/k/v.bias, added after the QKV projection (Qwen2)
QK_NORM = "qk_norm"  # attn_q_norm/attn_k_norm: per-head RMSNorm of q and k before RoPE (Qwen3)
EXTRA_TENSORS = {
    QKV_BIAS: ((T.ATTN_Q, "bias"), (T.ATTN_K, "bias"), (T.ATTN_V, "bias")),
    QK_NORM: ((T.ATTN_Q_NORM, "weight"), (T.ATTN_K_NORM, "weight")),
}
EXTRAS = tuple(EXTRA_TENSORS)


def layer_shapes(cfg) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
    """Torch-order shape of each per-layer tensor of a config (matrices (N, K), norms (n,)); a bias
    has its matrix's N."""
    return {
        T.ATTN_NORM: (cfg.dim,), T.FFN_NORM: (cfg.dim,),
        T.ATTN_Q: (cfg.q_dim, cfg.dim), T.ATTN_K: (cfg.kv_dim, cfg.dim), T.ATTN_V: (cfg.kv_dim, cfg.dim),
        T.ATTN_OUT: (cfg.dim, cfg.q_dim),
        T.ATTN_Q_NORM: (cfg.head_dim,), T.ATTN_K_NORM: (cfg.head_dim,),
        T.FFN_GATE: (cfg.ffn_dim, cfg.dim), T.FFN_UP: (cfg.ffn_dim, cfg.dim), T.FFN_DOWN: (cfg.dim, cfg.ffn_dim),
    }


def file_tensors(cfg, extras=frozenset(), tied: bool = False, rope_freqs: bool = False) -> list[tuple[str, tuple]]:
    """(name, torch-order shape) of every tensor a file of this config holds, in llama.cpp's order."""
    shapes = layer_shapes(cfg)
    wanted = {(t, "weight") for t in REQUIRED_LAYER} | {p for e in extras for p in EXTRA_TENSORS[e]}
    out = [(tensor_name(T.ROPE_FREQS), (cfg.rope_dim // 2,))] if rope_freqs else []
    out.append((tensor_name(T.TOKEN_EMBD), (cfg.n_vocab, cfg.dim)))
    for i in range(cfg.n_layers):
        for t in LAYER_ORDER:
            for suffix in ("bias", "weight"):
                if (t, suffix) in wanted:
                    out.append((tensor_name(t, i, suffix), shapes[t][:1] if suffix == "bias" else shapes[t]))
    out.append((tensor_name(T.OUTPUT_NORM), (cfg.dim,)))
    if not tied:
        out.append((tensor_name(T.OUTPUT), (cfg.n_vocab, cfg.dim)))
    return out


@dataclass(frozen=True)
class Architecture:
    name: str  # general.architecture
    gguf_arch: gguf.MODEL_ARCH  # gguf-py's id: its tensor-name map for the converter
    hf_classes: tuple[str, ...]  # config.json `architectures` the converter accepts
    rope_mode: str  # "normal": rotate adjacent pairs (x[2i], x[2i+1]); "neox": halves (x[i], x[i + d/2])
    permute_qk: bool  # the converter interleaves each head's Q/K rows (HF keeps halves, "normal" wants pairs)
    extras: frozenset[str] = frozenset()  # optional tensors a file of it may carry (loaded when present)
    typical: frozenset[str] = frozenset()  # those its converted (and synthetic) files do carry
    converter_keys: tuple[str, ...] = ()  # metadata keys the converter writes beyond the shared ones

    def __post_init__(self) -> None:
        if self.rope_mode not in ("normal", "neox"):
            raise ValueError(f"rope mode must be 'normal' or 'neox', not {self.rope_mode!r}")
        if not self.typical <= self.extras <= frozenset(EXTRAS):
            raise ValueError(f"{self.name}: typical extras must be among its extras, and those among {EXTRAS}")

    def key(self, template: str) -> str:
        """A `{arch}.*` metadata key for this architecture."""
        return template.format(arch=self.name)


ARCHITECTURES: Registry[Architecture] = Registry(key=lambda a: a.name)
register, unregister, lookup = ARCHITECTURES.register, ARCHITECTURES.unregister, ARCHITECTURES.lookup


def names() -> tuple[str, ...]:
    return tuple(a.name for a in ARCHITECTURES.values())


def get(name: str) -> Architecture:
    """The record for `general.architecture`, or a GGUFLMError naming what is supported."""
    arch = lookup(name)
    if arch is None:
        raise GGUFLMError(f"architecture {shown(name)} is not supported (supported: {', '.join(names())})")
    return arch


def for_hf_class(hf_class: str | None) -> Architecture | None:
    """The record whose converter accepts this Hugging Face class name."""
    return next((a for a in ARCHITECTURES.values() if hf_class in a.hf_classes), None)


def hf_classes() -> tuple[str, ...]:
    return tuple(c for a in ARCHITECTURES.values() for c in a.hf_classes)


# ---------------------------------------------------------------------------- the records

register(Architecture(
    name="llama", gguf_arch=gguf.MODEL_ARCH.LLAMA, hf_classes=("LlamaForCausalLM", "MistralForCausalLM"),
    rope_mode="normal", permute_qk=True, extras=frozenset({QKV_BIAS}),
    converter_keys=(K.LLM.VOCAB_SIZE, K.Rope.DIMENSION_COUNT, K.Tokenizer.ADD_PREFIX),
))
register(Architecture(
    name="qwen2", gguf_arch=gguf.MODEL_ARCH.QWEN2, hf_classes=("Qwen2ForCausalLM",),
    rope_mode="neox", permute_qk=False, extras=frozenset({QKV_BIAS}), typical=frozenset({QKV_BIAS}),
))
register(Architecture(
    name="qwen3", gguf_arch=gguf.MODEL_ARCH.QWEN3, hf_classes=("Qwen3ForCausalLM",),
    rope_mode="neox", permute_qk=False, extras=frozenset({QK_NORM}), typical=frozenset({QK_NORM}),
))
