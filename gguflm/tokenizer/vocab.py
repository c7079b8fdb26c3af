"""The vocabulary as llama.cpp reads it from tokenizer.ggml.* metadata: texts, scores, attributes, special ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gguf

from gguflm.errors import GGUFLMError, shown

K = gguf.Keys.Tokenizer

# Token attribute bits, as llama.cpp keeps them (llama_token_attr).
UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 2, 4, 8, 16, 32
_ATTR_OF_TYPE = {
    gguf.TokenType.NORMAL: NORMAL,
    gguf.TokenType.UNKNOWN: UNKNOWN,
    gguf.TokenType.CONTROL: CONTROL,
    gguf.TokenType.USER_DEFINED: USER_DEFINED,
    gguf.TokenType.UNUSED: UNUSED,
    gguf.TokenType.BYTE: BYTE,
}

# Texts llama.cpp treats as an end of turn when no eot id is given (first match wins here).
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)
# Every token with one of these texts ends generation (llama-vocab.cpp's special_eog_ids).
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))
# Fill-in-the-middle tokens that also end generation, found by text when not given by id.
_FIM_TEXTS = {
    K.FIM_PAD_ID: ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    K.FIM_REP_ID: ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    K.FIM_SEP_ID: ("<|file_sep|>",),
}
# gpt-oss: these control tokens are always rendered.
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass
class Vocab:
    """Token texts, scores and attributes plus the special ids and flags llama.cpp derives from them."""

    model: str                       # "llama" (SentencePiece); "gpt2", "gemma4" or "whitespace" (BPE)
    pre: str | None                  # tokenizer.ggml.pre (None when absent; "gemma4" for that model)
    texts: list[str]
    scores: list[float]
    attrs: list[int]
    merges: list[str]
    token_to_id: dict[str, int]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    lowercase: bool = False          # tokenizer.ggml.normalizer.lowercase (the whitespace model)
    eog_ids: frozenset[int] = frozenset()
    special_cache: list[int] = field(default_factory=list)  # control/user/unknown ids, longest text first

    @property
    def size(self) -> int:
        return len(self.texts)


def _array(md: dict[str, Any], key: str, n: int, default: Any) -> list:
    value = md.get(key)
    if value is None:
        return [default] * n
    if len(value) != n:
        raise GGUFLMError(f"metadata key '{key}' must be an array with one entry per token ({n} tokens, "
                          f"{len(value)} entries)")
    return value


# What each tokenizer key must hold: (the type of the value, or of every element when `each`), as a name.
_NUMBER, _INT = (int, float), int
_KINDS: dict[str, tuple[type | tuple, bool, str]] = {
    K.MODEL: (str, False, "a string"), K.PRE: (str, False, "a string"),
    K.LIST: (str, True, "an array of strings"), K.MERGES: (str, True, "an array of strings"),
    K.SCORES: (_NUMBER, True, "an array of numbers"), K.TOKEN_TYPE: (_INT, True, "an array of integers"),
    K.ADD_BOS: (bool, False, "a boolean"), K.ADD_EOS: (bool, False, "a boolean"),
    K.ADD_PREFIX: (bool, False, "a boolean"), "tokenizer.ggml.normalizer.lowercase": (bool, False, "a boolean"),
    **{key: (_INT, False, "an integer") for key in (K.BOS_ID, K.EOS_ID, K.EOT_ID, K.EOM_ID, K.UNK_ID,
                                                    K.FIM_PAD_ID, K.FIM_REP_ID, K.FIM_SEP_ID)},
}


def _is(value: Any, kind: type | tuple) -> bool:
    """isinstance, where a bool is not an integer or a number (the file said boolean)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def check_types(md: dict[str, Any]) -> None:
    """Every tokenizer key the file has holds the GGUF type llama.cpp reads it as, or a GGUFLMError names it."""
    for key, (kind, each, what) in _KINDS.items():
        if key not in md:
            continue
        value = md[key]
        ok = isinstance(value, list) and all(_is(v, kind) for v in value) if each else _is(value, kind)
        if not ok:
            raise GGUFLMError(f"metadata key '{key}' must be {what}, not {type(value).__name__}"
                              + (" (or it holds other values)" if isinstance(value, list) else ""))


def _token_id(md: dict[str, Any], key: str, default: int | None, n: int) -> int | None:
    if default is not None and default >= n:
        default = None
    value = md.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        return default
    return value


MODELS = ("llama", "gpt2", "gemma4", "whitespace")  # tokenizer.ggml.model values gguflm reads
_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"


def pre_name(md: dict[str, Any]) -> str | None:
    """tokenizer.ggml.pre as llama.cpp reads it: the gemma4 model always uses its own."""
    return "gemma4" if md.get(K.MODEL) == "gemma4" else md.get(K.PRE) or None


def load_vocab(md: dict[str, Any], pre_defaults: tuple[bool, bool], force_bos: bool = False) -> Vocab:
    """Build the vocabulary from metadata; pre_defaults is (add_bos, add_space_prefix) for the model, and
    force_bos adds BOS whatever the file says (llama.cpp's override for gemma4); md passed check_types."""
    model = md.get(K.MODEL)
    if model is None or model in ("none", "no_vocab"):
        raise GGUFLMError(f"the file has no tokenizer ('{K.MODEL}' is missing or none)")
    if model not in MODELS:
        raise GGUFLMError(f"unsupported tokenizer model {shown(model)} (supported: {', '.join(MODELS)})")
    texts = md.get(K.LIST)
    if not texts:
        raise GGUFLMError(f"metadata key '{K.LIST}' (the token list) is missing or empty")
    n = len(texts)
    scores = _array(md, K.SCORES, n, 0.0)
    types = _array(md, K.TOKEN_TYPE, n, int(gguf.TokenType.NORMAL))
    merges = md.get(K.MERGES) or []
    if model != "llama" and not merges:
        raise GGUFLMError(f"metadata key '{K.MERGES}' is missing for a {model} (BPE) tokenizer")

    if "" in texts:
        texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(texts)]
    token_to_id = dict(zip(texts, range(n)))
    if len(token_to_id) != n:
        token_to_id = {}
        for i, t in enumerate(texts):
            token_to_id.setdefault(t, i)  # llama.cpp rejects duplicates; keeping the first is kinder
    attrs = [_ATTR_OF_TYPE.get(t, 0) for t in types]

    spm = model == "llama"
    add_bos, add_space_prefix = pre_defaults
    add_bos = md.get(K.ADD_BOS, add_bos)
    add_eos = md.get(K.ADD_EOS, False)
    add_space_prefix = md.get(K.ADD_PREFIX, add_space_prefix)
    # llama.cpp's defaults: SPM bos=1 eos=2 unk=0; for BPE it guesses 11, which we do not copy.
    vocab = Vocab(
        model=model, pre=pre_name(md), texts=texts, scores=scores, attrs=attrs,
        merges=merges, token_to_id=token_to_id,
        bos_id=_token_id(md, K.BOS_ID, 1 if spm else None, n),
        eos_id=_token_id(md, K.EOS_ID, 2 if spm else None, n),
        eot_id=_token_id(md, K.EOT_ID, None, n),
        eom_id=_token_id(md, K.EOM_ID, None, n),
        unk_id=_token_id(md, K.UNK_ID, 0 if spm else None, n),
        add_bos=bool(add_bos) or force_bos,
        add_eos=bool(add_eos), add_space_prefix=bool(add_space_prefix), lowercase=bool(md.get(_LOWERCASE)),
    )
    if vocab.add_bos and vocab.bos_id is None:
        raise GGUFLMError(f"{K.ADD_BOS} is true, but {K.BOS_ID} is not set")
    if vocab.add_eos and vocab.eos_id is None:
        raise GGUFLMError(f"{K.ADD_EOS} is true, but {K.EOS_ID} is not set")
    _find_end_tokens(vocab, md)
    vocab.special_cache = sorted(
        (i for i, a in enumerate(attrs) if a & (CONTROL | USER_DEFINED | UNKNOWN)),
        key=lambda i: -len(texts[i]),
    )
    return vocab


def _mark_control(vocab: Vocab, token_id: int) -> None:
    # llama.cpp: a control-looking token that is not control-typed gets overridden.
    vocab.attrs[token_id] |= CONTROL


def _find_end_tokens(vocab: Vocab, md: dict[str, Any]) -> None:
    """The end-of-generation set, by llama-vocab.cpp's rules (ids from metadata, then known texts)."""
    t2i = vocab.token_to_id
    if vocab.eot_id is None:
        vocab.eot_id = next((t2i[t] for t in _EOT_TEXTS if t in t2i), None)
        if vocab.eot_id is not None:
            _mark_control(vocab, vocab.eot_id)
    if vocab.eom_id is None and "<|eom_id|>" in t2i:
        vocab.eom_id = t2i["<|eom_id|>"]
        _mark_control(vocab, vocab.eom_id)

    eog: set[int] = set()
    for key, texts in _FIM_TEXTS.items():
        fim = _token_id(md, key, None, vocab.size)
        if fim is None:
            fim = next((t2i[t] for t in texts if t in t2i), None)
            if fim is not None:
                _mark_control(vocab, fim)
        if fim is not None:
            eog.add(fim)
    for text in _EOG_TEXTS:
        if text in t2i:
            eog.add(t2i[text])
            _mark_control(vocab, t2i[text])
    for text in _ALWAYS_RENDERED:
        if text in t2i:
            vocab.attrs[t2i[text]] = USER_DEFINED
    eog.update(i for i in (vocab.eos_id, vocab.eot_id, vocab.eom_id) if i is not None)

    present = {vocab.texts[i] for i in eog}
    # o200k_harmony / solar-open: "<|end|>" ends a message there, not the generation.
    has_call = "<|call|>" in present or "<|calls|>" in present
    if "<|end|>" in present and has_call and ("<|return|>" in present or "<|flush|>" in present):
        end = t2i["<|end|>"]
        eog.discard(end)
        vocab.attrs[end] = USER_DEFINED
    # gemma4: "</s>" is an ordinary token there.
    if "<|tool_response>" in present and "</s>" in present:
        eog.discard(t2i["</s>"])
        vocab.attrs[t2i["</s>"]] = NORMAL
    vocab.eog_ids = frozenset(eog)

