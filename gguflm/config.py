"""ModelConfig: the model's hyper-parameters, read once from the GGUF `{arch}.*` keys."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import gguf

from gguflm import arch as archs
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import GGUFFile

# Scaling types handled: none, linear (positions divided by the factor), and llama3, whose
# factors ship as the `rope_freqs` tensor. YaRN and longrope change attention itself.
SUPPORTED_ROPE_SCALING = ("none", "linear", "llama3")
MAX_DIM = 1 << 24  # a count or size past this is a corrupt file, not a model (Llama 3.1's context is 2^17)


_BLOCK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_ctx_train: int
    dim: int
    n_layers: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    norm_eps: float
    rope_base: float = 10000.0
    rope_dim: int = 0  # 0: the whole head
    rope_scale: float = 1.0  # linear scaling: positions are divided by this
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("n_vocab", "n_ctx_train", "dim", "n_layers", "ffn_dim", "n_heads", "n_kv_heads", "head_dim"):
            value = getattr(self, field)
            if not 0 < value <= MAX_DIM:
                raise GGUFLMError(f"model metadata gives {field} = {value}, which must be positive (at most {MAX_DIM})")
        if self.n_heads % self.n_kv_heads:
            raise GGUFLMError(f"head_count {self.n_heads} is not a multiple of head_count_kv {self.n_kv_heads}")
        if self.rope_dim == 0:
            object.__setattr__(self, "rope_dim", self.head_dim)
        if self.rope_dim < 0 or self.rope_dim % 2 or self.rope_dim > self.head_dim:
            raise GGUFLMError(f"rope dimension {self.rope_dim} must be even, positive and at most the head size "
                              f"{self.head_dim}")
        for field in ("norm_eps", "rope_base", "rope_scale"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise GGUFLMError(f"model metadata gives {field} = {value}, which must be a positive finite number")

    @property
    def architecture(self) -> archs.Architecture:
        return archs.get(self.arch)

    @property
    def rope_mode(self) -> str:
        return self.architecture.rope_mode

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_gguf(cls, gf: GGUFFile) -> "ModelConfig":
        record = archs.get(gf.architecture)
        key = record.key
        k = gguf.Keys

        dim = gf.require(key(k.LLM.EMBEDDING_LENGTH), int)
        n_heads = gf.require(key(k.Attention.HEAD_COUNT), int)
        n_kv = gf.get(key(k.Attention.HEAD_COUNT_KV), n_heads, int)
        if n_heads <= 0:
            raise GGUFLMError(f"head_count {n_heads} must be positive")
        head_dim = gf.get(key(k.Attention.KEY_LENGTH), dim // n_heads, int)
        v_dim = gf.get(key(k.Attention.VALUE_LENGTH), head_dim, int)
        if v_dim != head_dim:
            raise GGUFLMError(f"value head size {v_dim} differs from key head size {head_dim}; not supported")

        scaling = gf.get(key(k.Rope.SCALING_TYPE), "none", str)
        if scaling not in SUPPORTED_ROPE_SCALING:
            raise GGUFLMError(
                f"rope scaling '{scaling}' is not supported (supported: {', '.join(SUPPORTED_ROPE_SCALING)})"
            )
        if scaling == "llama3" and archs.tensor_name(archs.T.ROPE_FREQS) not in gf.tensors:
            raise GGUFLMError("rope scaling 'llama3' needs the rope_freqs tensor, which the file lacks")
        rope_scale = 1.0
        if scaling == "linear":
            rope_scale = gf.get(key(k.Rope.SCALING_FACTOR), 1.0, float)

        embd = gf.tensor(archs.tensor_name(archs.T.TOKEN_EMBD))
        if len(embd.shape) != 2:
            raise GGUFLMError(f"tensor '{embd.name}' has {len(embd.shape)} dimensions, expected 2")
        n_vocab = int(embd.shape[1])
        n_layers = gf.require(key(k.LLM.BLOCK_COUNT), int)
        blocks = {int(m.group(1)) for name in gf.tensors if (m := _BLOCK.match(name))}
        if blocks and max(blocks) >= n_layers:
            raise GGUFLMError(f"the file has tensors of block {max(blocks)} but block_count is {n_layers}")
        if n_layers > len(blocks):
            raise GGUFLMError(f"block_count is {n_layers} but the file has tensors for {len(blocks)} blocks")
        n_tokens = len(gf.get(k.Tokenizer.LIST, [], list))
        if n_tokens and n_tokens != n_vocab:  # token ids would index past one or the other
            raise GGUFLMError(f"the tokenizer has {n_tokens} tokens but token_embd has {n_vocab} rows")
        return cls(
            arch=record.name,
            n_vocab=n_vocab,
            n_ctx_train=gf.get(key(k.LLM.CONTEXT_LENGTH), 2048, int),
            dim=dim,
            n_layers=n_layers,
            ffn_dim=gf.require(key(k.LLM.FEED_FORWARD_LENGTH), int),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            norm_eps=gf.get(key(k.Attention.LAYERNORM_RMS_EPS), 1e-5, float),
            rope_base=gf.get(key(k.Rope.FREQ_BASE), 10000.0, float),
            rope_dim=gf.get(key(k.Rope.DIMENSION_COUNT), head_dim, int),
            rope_scale=rope_scale,
            name=gf.get(k.General.NAME, "", str),
        )
