"""Synthetic GGUF models with random weights, for tests and benchmarks (no hub needed).

`write_synthetic_gguf` writes any architecture's tensors (the arch record says which), `vocab`
makes a small valid vocabulary of any size, `shapes` the real models' shapes for benchmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from gguflm import arch as archs
from gguflm.config import ModelConfig
from gguflm.files import atomic_write

QT = gguf.GGMLQuantizationType


@dataclass
class SyntheticSpec:
    """Shapes and options of a random model; defaults make a tiny llama."""

    arch: str = "llama"
    n_vocab: int = 256
    dim: int = 64
    n_layers: int = 2
    ffn_dim: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    n_ctx: int = 512
    rope_base: float = 10000.0
    qtype: str = "F32"  # type of 2-D weights: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
    tied: bool = False
    extras: frozenset[str] | None = None  # optional tensors (arch.QKV_BIAS, ...); None: what the arch's files carry
    rope_freqs: bool = False
    seed: int = 0
    extra_metadata: dict = field(default_factory=dict)  # key -> value or (value, GGUFValueType); replaces a default
    drop_tensors: tuple[str, ...] = ()  # for tests of broken files
    replace_tensors: dict = field(default_factory=dict)  # name -> (array, raw_dtype or None)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, n_vocab=self.n_vocab, n_ctx_train=self.n_ctx, dim=self.dim,
                           n_layers=self.n_layers, ffn_dim=self.ffn_dim, n_heads=self.n_heads,
                           n_kv_heads=self.n_kv_heads, head_dim=self.head_dim, norm_eps=1e-5,
                           rope_base=self.rope_base)

    @property
    def layer_extras(self) -> frozenset[str]:
        if self.extras is not None:
            return frozenset(self.extras)
        record = archs.lookup(self.arch)
        return record.typical if record else frozenset()


def _q8_0_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    blocks = np.empty((rows, cols // 32, 34), dtype=np.uint8)
    d = (rng.random((rows, cols // 32), dtype=np.float32) * 0.5 + 0.5) / (127 * np.sqrt(cols))
    blocks[:, :, :2] = d.astype(np.float16)[..., None].view(np.uint8)
    blocks[:, :, 2:] = rng.integers(-127, 128, size=(rows, cols // 32, 32), dtype=np.int8).view(np.uint8)
    return blocks


def _iq4_nl_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    blocks = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)  # any nibble is a valid index
    d = (rng.random((rows, cols // 32), dtype=np.float32) * 0.5 + 0.5) / (100 * np.sqrt(cols))
    blocks[:, :, :2] = d.astype(np.float16)[..., None].view(np.uint8)
    return blocks


# qtype -> random valid blocks (rows, cols / block, block bytes), for formats quantizing floats is slow or
# gguf-py cannot; the other block formats quantize Gaussian weights with gguf.quants.quantize
RANDOM_BLOCKS = {"Q8_0": _q8_0_blocks, "IQ4_NL": _iq4_nl_blocks}
DENSE = {"F32": np.float32, "F16": np.float16}


def _random_weight(rng: np.random.Generator, rows: int, cols: int, qtype: str) -> tuple[np.ndarray, QT]:
    """Random (rows, cols) weight in the file layout of `qtype`, scaled so activations stay O(1)."""
    if qtype in RANDOM_BLOCKS:
        return RANDOM_BLOCKS[qtype](rng, rows, cols).reshape(rows, -1), QT[qtype]
    w = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
    if qtype in DENSE:
        return w.astype(DENSE[qtype]), QT[qtype]
    if qtype == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.int16), QT.BF16
    return np.asarray(gguf.quants.quantize(w, QT[qtype])), QT[qtype]


def write_synthetic_gguf(path: str | os.PathLike, spec: SyntheticSpec, tokenizer: dict | None = None) -> Path:
    """Write a random model of `spec` to `path` (atomically: a temporary name, fsynced, renamed)."""
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    cfg = spec.config
    with atomic_write(path, "the synthetic model") as tmp:
        w = gguf.GGUFWriter(tmp, spec.arch)
        arch = spec.arch
        defaults = {
            gguf.Keys.General.NAME: (f"synthetic-{arch}", gguf.GGUFValueType.STRING),
            gguf.Keys.LLM.CONTEXT_LENGTH: spec.n_ctx, gguf.Keys.LLM.EMBEDDING_LENGTH: spec.dim,
            gguf.Keys.LLM.BLOCK_COUNT: spec.n_layers, gguf.Keys.LLM.FEED_FORWARD_LENGTH: spec.ffn_dim,
            gguf.Keys.Attention.HEAD_COUNT: spec.n_heads, gguf.Keys.Attention.HEAD_COUNT_KV: spec.n_kv_heads,
            gguf.Keys.Rope.FREQ_BASE: (spec.rope_base, gguf.GGUFValueType.FLOAT32),
            gguf.Keys.Attention.LAYERNORM_RMS_EPS: (cfg.norm_eps, gguf.GGUFValueType.FLOAT32),
            gguf.Keys.Rope.DIMENSION_COUNT: cfg.head_dim,
        }
        metadata = {key.format(arch=arch): value for key, value in defaults.items()} | spec.extra_metadata
        for key, value in metadata.items():
            value, vtype = value if isinstance(value, tuple) else (value, _value_type(value))
            w.add_key_value(key, value, vtype)
        for key, (value, vtype) in (tokenizer or {}).items():
            w.add_key_value(key, value, vtype)
        for name, shape in archs.file_tensors(cfg, spec.layer_extras, spec.tied, spec.rope_freqs):
            raw_dtype = None
            if name == archs.tensor_name(archs.T.ROPE_FREQS):
                data = (1.0 + rng.random(shape[0]) * 7).astype(np.float32)
            elif len(shape) == 2:
                data, raw_dtype = _random_weight(rng, *shape, spec.qtype)
                raw_dtype = None if raw_dtype in (QT.F32, QT.F16) else raw_dtype  # numpy cannot name the others
            else:  # norms around 1, biases around 0
                around = 0.0 if name.endswith(".bias") else 1.0
                data = (around + 0.1 * rng.standard_normal(shape[0])).astype(np.float32)
            if name in spec.replace_tensors:
                data, raw_dtype = spec.replace_tensors[name]
            if name not in spec.drop_tensors:
                w.add_tensor(name, data, raw_dtype=raw_dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _value_type(value) -> gguf.GGUFValueType:
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    return gguf.GGUFValueType.FLOAT32
