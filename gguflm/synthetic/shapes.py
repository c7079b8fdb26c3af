"""Synthetic GGUF files with the exact shapes of named models (random Q8_0 weights, a small valid vocab).

The architecture record decides the optional tensors (Qwen2.5's QKV biases, Qwen3's q/k norms)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gguflm.errors import GGUFLMError
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer

# Shapes from each model's config.json; the vocabulary size is the real one (the output head is read
# every token), the tokenizer inside is a small SentencePiece vocab padded to that size.
SHAPES = {
    "llama-3-8b": SyntheticSpec(
        arch="llama", n_vocab=128256, dim=4096, n_layers=32, ffn_dim=14336, n_heads=32, n_kv_heads=8,
        n_ctx=8192, rope_base=500000.0,
    ),
    "llama-3.2-1b": SyntheticSpec(
        arch="llama", n_vocab=128256, dim=2048, n_layers=16, ffn_dim=8192, n_heads=32, n_kv_heads=8,
        n_ctx=131072, rope_base=500000.0, tied=True, rope_freqs=True,
    ),
    "qwen2.5-7b": SyntheticSpec(
        arch="qwen2", n_vocab=152064, dim=3584, n_layers=28, ffn_dim=18944, n_heads=28, n_kv_heads=4,
        n_ctx=32768, rope_base=1000000.0,
    ),
    "qwen3-8b": SyntheticSpec(
        arch="qwen3", n_vocab=151936, dim=4096, n_layers=36, ffn_dim=12288, n_heads=32, n_kv_heads=8,
        n_ctx=40960, rope_base=1000000.0,
    ),
    # for checking the benchmark's code path on the CPU (head size 32: every KV cache type fits)
    "tiny": SyntheticSpec(
        arch="llama", n_vocab=320, dim=64, n_layers=2, ffn_dim=128, n_heads=2, n_kv_heads=1, n_ctx=1024,
    ),
}


def shape_spec(name: str, qtype: str = "Q8_0") -> SyntheticSpec:
    if name not in SHAPES:
        raise GGUFLMError(f"unknown model shape '{name}' (known: {', '.join(SHAPES)})")
    return replace(SHAPES[name], qtype=qtype)


def synthetic_model(name: str, workdir: str | Path, qtype: str = "Q8_0") -> Path:
    """The path of a synthetic GGUF shaped like `name` in `workdir`, written once and reused."""
    spec = shape_spec(name, qtype)
    path = Path(workdir) / f"synthetic-{name}-{qtype.lower()}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_gguf(path, spec, tokenizer=spm_tokenizer(spec.n_vocab))
    return path
