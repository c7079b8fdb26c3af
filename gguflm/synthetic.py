"""Synthetic GGUF models with random weights, for tests and benchmarks (no hub needed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

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
    qtype: str = "F32"  # type of 2-D weights: F32, F16, BF16, Q8_0
    tied: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    rope_freqs: bool = False
    seed: int = 0
    extra_metadata: dict = field(default_factory=dict)
    drop_tensors: tuple[str, ...] = ()  # for tests of broken files
    replace_tensors: dict = field(default_factory=dict)  # name -> (array, raw_dtype or None)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def _random_weight(rng: np.random.Generator, rows: int, cols: int, qtype: str) -> tuple[np.ndarray, QT]:
    """Random (rows, cols) weight in the file layout of `qtype`, scaled so activations stay O(1)."""
    if qtype == "Q8_0":  # random blocks directly: quantizing floats is slow for large models
        blocks = np.empty((rows, cols // 32, 34), dtype=np.uint8)
        d = (rng.random((rows, cols // 32), dtype=np.float32) * 0.5 + 0.5) / (127 * np.sqrt(cols))
        blocks[:, :, :2] = d.astype(np.float16)[..., None].view(np.uint8)
        blocks[:, :, 2:] = rng.integers(-127, 128, size=(rows, cols // 32, 32), dtype=np.int8).view(np.uint8)
        return blocks.reshape(rows, -1), QT.Q8_0
    w = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
    if qtype == "F16":
        return w.astype(np.float16), QT.F16
    if qtype == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.int16), QT.BF16
    return w, QT.F32


def write_synthetic_gguf(path: str | os.PathLike, spec: SyntheticSpec, tokenizer: dict | None = None) -> Path:
    """Write a random model of `spec` to `path` (written to a temporary name, then renamed)."""
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    hd = spec.head_dim
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, spec.arch)
    w.add_name(f"synthetic-{spec.arch}")
    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.dim)
    w.add_block_count(spec.n_layers)
    w.add_feed_forward_length(spec.ffn_dim)
    w.add_head_count(spec.n_heads)
    w.add_head_count_kv(spec.n_kv_heads)
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    for key, value in spec.extra_metadata.items():
        w.add_key_value(key, value, _value_type(value))
    for key, (value, vtype) in (tokenizer or {}).items():
        w.add_key_value(key, value, vtype)

    def add(name: str, data: np.ndarray, raw_dtype: QT | None = None) -> None:
        if name in spec.replace_tensors:
            data, raw_dtype = spec.replace_tensors[name]
        if name not in spec.drop_tensors:
            w.add_tensor(name, data, raw_dtype=raw_dtype)

    def matrix(name: str, rows: int, cols: int) -> None:
        data, qtype = _random_weight(rng, rows, cols, spec.qtype)
        add(name, data, qtype if qtype in (QT.Q8_0, QT.BF16) else None)

    def vector(name: str, n: int, around: float = 1.0) -> None:
        add(name, (around + 0.1 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", spec.n_vocab, spec.dim)
    for i in range(spec.n_layers):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", spec.dim)
        matrix(b + "attn_q.weight", spec.n_heads * hd, spec.dim)
        matrix(b + "attn_k.weight", spec.n_kv_heads * hd, spec.dim)
        matrix(b + "attn_v.weight", spec.n_kv_heads * hd, spec.dim)
        if spec.qkv_bias:
            vector(b + "attn_q.bias", spec.n_heads * hd, 0.0)
            vector(b + "attn_k.bias", spec.n_kv_heads * hd, 0.0)
            vector(b + "attn_v.bias", spec.n_kv_heads * hd, 0.0)
        if spec.qk_norm:
            vector(b + "attn_q_norm.weight", hd)
            vector(b + "attn_k_norm.weight", hd)
        matrix(b + "attn_output.weight", spec.dim, spec.n_heads * hd)
        vector(b + "ffn_norm.weight", spec.dim)
        matrix(b + "ffn_gate.weight", spec.ffn_dim, spec.dim)
        matrix(b + "ffn_up.weight", spec.ffn_dim, spec.dim)
        matrix(b + "ffn_down.weight", spec.dim, spec.ffn_dim)
    vector("output_norm.weight", spec.dim)
    if not spec.tied:
        matrix("output.weight", spec.n_vocab, spec.dim)
    if spec.rope_freqs:
        add("rope_freqs.weight", (1.0 + rng.random(hd // 2) * 7).astype(np.float32))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _value_type(value) -> gguf.GGUFValueType:
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    return gguf.GGUFValueType.FLOAT32
