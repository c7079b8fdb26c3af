"""Tiny random Hugging Face checkpoints (llama, mistral, qwen2, qwen3) built locally for tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

ARCHS = ("llama", "mistral", "qwen2", "qwen3")

# Multiples of 32 so that every 2-D weight quantizes to Q8_0 without a fallback.
_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
)
_DEFAULT_VOCAB = 256

# Llama 3.1's published values; a test may override any of them.
_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _config(arch: str, **kw):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    classes = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    if arch not in classes:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {', '.join(ARCHS)}")
    return classes[arch](**kw)


@torch.no_grad()
def _randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Re-draw every weight so activations stay O(1) and logits are well spread (clear argmax)."""
    hidden = model.config.hidden_size
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if name.endswith("norm.weight"):
            value = 1.0 + 0.2 * noise  # non-trivial gains so a dropped norm would show up
        elif name.endswith(".bias"):
            value = 0.2 * noise
        elif "embed_tokens" in name:
            value = noise
        elif "lm_head" in name:
            value = noise * (4.0 / hidden**0.5)
        else:
            value = noise / p.shape[1] ** 0.5
        p.copy_(value.to(p.dtype))


def make_tiny_checkpoint(
    dir: Path,
    arch: str,
    *,
    tie_embeddings: bool = False,
    gqa: bool = True,
    rope_scaling: dict | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    tokenizer: str | None = None,
    **config_overrides,
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) for a 2-layer random model into `dir`.

    `tokenizer` is None, "spm", "bpe-llama3" or "bpe-qwen2"; `rope_scaling={"rope_type": "llama3"}`
    gets Llama 3.1's other fields filled in.
    """
    from transformers import AutoModelForCausalLM

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    vocab_size, special = _DEFAULT_VOCAB, {"bos_token_id": 1, "eos_token_id": 2}
    if tokenizer is not None:
        vocab_size, special = save_tokenizer(dir, tokenizer)
    kw = dict(_SHAPE, vocab_size=vocab_size, num_key_value_heads=2 if gqa else 4, **special)
    kw["tie_word_embeddings"] = tie_embeddings
    if rope_scaling is not None:
        kw["rope_scaling"] = {**_LLAMA3_ROPE, **rope_scaling} if rope_scaling.get("rope_type") == "llama3" else rope_scaling
        kw.setdefault("rope_theta", 500000.0)
    kw.update(config_overrides)
    config = _config(arch, **kw)

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomize(model, generator)
    model = model.to(dtype)
    model.config.dtype = dtype
    model.save_pretrained(dir, safe_serialization=True)
    return dir


# ---- tokenizers, trained here on a few paragraphs (no hub access) ----

CORPUS = """The quick brown fox jumps over the lazy dog. A tiny language model reads these words and learns nothing.
Numbers like 42, 1234 and 3.14 appear here, with punctuation: commas, periods! questions? and "quotes".
Hello world, hello again; the weather is fine today and the sky is blue over the little town by the sea.
Converting checkpoints to GGUF files keeps tensors, metadata and the vocabulary together in one place.
    Indented lines, tabs\tand  double  spaces, newlines

and blank lines all matter to a byte-level tokenizer. Ünïcödé wörds, café, naïve, 東京 and emoji 🙂 too.
I'm sure they'll say it's fine; we've seen what you'd do, and we're ready.
"""
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TOKENIZERS = ("spm", "bpe-llama3", "bpe-qwen2")


def save_tokenizer(dir: Path, kind: str) -> tuple[int, dict]:
    """Train and save a tokenizer of `kind` into `dir`; return (vocab size, special-token config ids)."""
    if kind == "spm":
        return _save_spm(dir)
    if kind in ("bpe-llama3", "bpe-qwen2"):
        return _save_bpe(dir, kind)
    raise ValueError(f"unknown tiny tokenizer {kind!r}; choose from {', '.join(TOKENIZERS)}")


def _save_spm(dir: Path) -> tuple[int, dict]:
    import io

    import sentencepiece as spm
    from transformers import AutoTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 20), model_writer=buf, vocab_size=448, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, minloglevel=2,
    )
    (dir / "tokenizer.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "chat_template": _CHAT_TEMPLATE}
    (dir / "tokenizer_config.json").write_text(json.dumps(config))
    hf = AutoTokenizer.from_pretrained(dir)
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})  # chat tokens
    hf.save_pretrained(dir)  # adds the tokenizer.json a real Llama 2 repository ships
    (dir / "tokenizer.model").write_bytes(buf.getvalue())
    return len(hf), {"bos_token_id": 1, "eos_token_id": 2}


def _save_bpe(dir: Path, kind: str) -> tuple[int, dict]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    llama3 = kind == "bpe-llama3"
    specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"] if llama3
                else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT if llama3 else _QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines() * 20, trainer)
    tok.add_special_tokens(specials)
    bos, eos = ("<|begin_of_text|>", "<|eot_id|>") if llama3 else (None, "<|im_end|>")
    if llama3:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, chat_template=_CHAT_TEMPLATE)
    hf.save_pretrained(dir)
    ids = {"eos_token_id": tok.token_to_id(eos)}
    ids["bos_token_id"] = tok.token_to_id(bos) if bos else None
    return len(hf), ids


def load_hf_tokenizer(dir: Path):
    """The transformers tokenizer saved in `dir`."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(dir))


def load_hf_model(dir: Path) -> torch.nn.Module:
    """The transformers model saved in `dir`, in float32 and eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(dir), dtype=torch.float32)
    return model.eval()
