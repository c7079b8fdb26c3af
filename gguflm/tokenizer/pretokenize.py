"""Pre-tokenizer settings per tokenizer.ggml.pre name: split regexes and flags, as llama.cpp chooses them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

# The regexes are the originals from each model's tokenizer.json (what llama.cpp's hand-written
# splitters emulate); they run in order, each splitting every piece the previous one produced.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS
         + r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS
         + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK3 = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
             r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class PreTokenizer:
    """How one pre-tokenizer family splits text and what llama.cpp switches on for it."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a whole pre-token found in the vocab is taken as is
    add_bos: bool = False        # llama.cpp's default when tokenizer.ggml.add_bos_token is absent
    clean_spaces: bool = True    # llama.cpp's detokenizer clean-up (" ," -> ",")


_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_GPT2 = PreTokenizer((GPT2,))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((QWEN2,), clean_spaces=False)
_STARCODER = PreTokenizer((r"\p{N}", GPT2))

_TABLE: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                     "lfm2"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((LLAMA3,))),
    **dict.fromkeys(("glm4", "chatglm-bpe"), PreTokenizer((LLAMA3,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez", "hunyuan"), _QWEN2),
    "stablelm2": PreTokenizer((QWEN2,)),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "exaone4",
                     "a.x-4.0", "mellum"), _GPT2),
    "trillion": PreTokenizer((GPT2,), clean_spaces=False),
    "granite-docling": PreTokenizer((GPT2,), clean_spaces=False),
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b"), _STARCODER),
    **dict.fromkeys(("smollm", "command-r"), PreTokenizer((r"\p{N}", GPT2), clean_spaces=False)),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")),
    **dict.fromkeys(("tekken", "mistral-bpe"),
                    PreTokenizer((TEKKEN,), ignore_merges=True, add_bos=True, clean_spaces=False)),
    **dict.fromkeys(("gpt-4o", "llama4"), PreTokenizer((GPT4O,), clean_spaces=False)),
    **dict.fromkeys(("deepseek-v3", "hunyuan-dense"), PreTokenizer(
        (r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3), clean_spaces=False)),
    "deepseek-coder": PreTokenizer(
        (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"), clean_spaces=False),
    **dict.fromkeys(("poro-chat", "bloom", "gpt3-finnish"),
                    PreTokenizer((r" ?[^(\s|.,!?…。，、।۔،)]+",), clean_spaces=False)),
}

SUPPORTED = tuple(sorted(_TABLE))


def pre_tokenizer_for(name: str) -> PreTokenizer:
    """The settings for a pre-tokenizer name; an unknown name falls back to GPT-2's split, with a warning."""
    spec = _TABLE.get(name)
    if spec is None:
        warnings.warn(
            f"unknown tokenizer.ggml.pre '{name}': splitting text like GPT-2, so tokens may differ "
            "from the model's own tokenizer",
            UserWarning,
            stacklevel=3,
        )
        return _GPT2
    return spec


def default_add_bos(name: str) -> bool:
    """llama.cpp's add_bos default for a BPE pre-tokenizer name (used when the file does not say)."""
    return _TABLE.get(name, _GPT2).add_bos
