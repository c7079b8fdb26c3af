"""Tokenizer export: SentencePiece (`llama`) or byte-level BPE (`gpt2`) into tokenizer.ggml.* keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf
from gguf import TokenType as T

from gguflm.convert import validate
from gguflm.convert.checkpoint import first_line, read_json
from gguflm.errors import GGUFLMError
from gguflm.tokenizer.pretokenize import LLAMA3, QWEN2, TEKKEN

log = logging.getLogger(__name__)

# Pre-tokenizer pipelines as tokenizer.json spells them, keyed to the name llama.cpp uses. llama.cpp
# hashes the ids of a check text instead; matching the whole pipeline identifies the same behaviour
# for the families gguflm converts, locally trained tokenizers included, and nothing else. The
# regexes are the tokenizer's own table (gguflm.tokenizer.pretokenize).
KNOWN_PRE: dict[str, tuple] = {
    "llama-bpe": (("Split", LLAMA3, "isolated", False), ("ByteLevel", False)),
    "qwen2": (("Split", QWEN2, "isolated", False), ("ByteLevel", False)),
    "tekken": (("Split", TEKKEN, "isolated", False), ("ByteLevel", False)),
    "gpt-2": (("ByteLevel", True),),
    "smollm": (("Digits", True), ("ByteLevel", True)),
}


def has_tokenizer(hf_dir: Path) -> bool:
    """Whether `hf_dir` holds a tokenizer the converter can export."""
    return (hf_dir / "tokenizer.model").is_file() or (hf_dir / "tokenizer.json").is_file()


def write_vocab(w: gguf.GGUFWriter, hf_dir: Path, config: dict, *, add_prefix_key: bool, pre: str | None = None) -> None:
    """Add tokenizer.ggml.* keys (tokens, types, scores or merges, special ids, chat template) to `w`."""
    vocab_size = config.get("vocab_size")
    if (hf_dir / "tokenizer.model").is_file():
        tokens, scores, types = _spm_vocab(hf_dir, vocab_size)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        bpe = False
    elif (hf_dir / "tokenizer.json").is_file():
        tokens, types, spec = _bpe_vocab(hf_dir, vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre or detect_pre(spec))
        w.add_token_list(tokens)
        w.add_token_types(types)
        bpe = True
    else:
        raise GGUFLMError(f"{hf_dir} has no tokenizer.model or tokenizer.json to export.")
    tc = _tokenizer_config(hf_dir)
    validate.check_special_tokens_known(tc, tokens)
    if add_prefix_key and tc.get("add_prefix_space") is not None:
        w.add_add_space_prefix(tc["add_prefix_space"])
    special = _special_vocab(hf_dir, bpe, len(tokens))
    if "eos" not in special.special_token_ids and (hf_dir / "generation_config.json").is_file():
        eos = read_json(hf_dir / "generation_config.json").get("eos_token_id")
        validate.check_token_ids(eos, "generation_config.json's 'eos_token_id'", len(tokens))
        special._set_special_token("eos", eos[0] if isinstance(eos, list) and eos else eos)
    special.add_to_gguf(w, quiet=True)


def _tokenizer_config(hf_dir: Path) -> dict:
    """tokenizer_config.json (checked), or {} when there is none."""
    if not (hf_dir / "tokenizer_config.json").is_file():
        return {}
    tc = read_json(hf_dir / "tokenizer_config.json")
    validate.check_tokenizer_config(tc)
    return tc


def _special_vocab(hf_dir: Path, bpe: bool, n_vocab: int) -> gguf.SpecialVocab:
    """gguf-py's reader of merges, special ids and the chat template; the files it reads were checked,
    and what it still refuses (its own format rules) becomes one clear error."""
    try:
        return gguf.SpecialVocab(hf_dir, load_merges=bpe, n_vocab=n_vocab)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError) as e:
        raise GGUFLMError(f"cannot read the special tokens of {hf_dir}: {first_line(e)}") from None


def looks_special(text: str) -> bool:
    """Added tokens some models forget to flag as special (llama.cpp's heuristic)."""
    return (text in ("<pad>", "<mask>") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<unused") and text.endswith(">")))


# ---- SentencePiece ----

def _spm_vocab(hf_dir: Path, vocab_size: int | None) -> tuple[list[bytes], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(hf_dir / "tokenizer.model"))
    except (OSError, RuntimeError, ValueError) as e:  # ValueError: a string field that is not UTF-8
        raise GGUFLMError(f"cannot read {hf_dir / 'tokenizer.model'}: {first_line(e)}") from None
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores, types = [-10000.0] * n, [T.UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        kind = T.NORMAL
        if sp.IsUnknown(i):
            kind = T.UNKNOWN
        elif sp.IsControl(i):
            kind = T.CONTROL
        elif sp.IsUnused(i):
            kind = T.UNUSED
        elif sp.IsByte(i):
            kind = T.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i), kind
    added = _added_tokens(hf_dir)
    # tokenizer.json's added tokens only extend the SentencePiece vocabulary (chat tokens appended
    # by a fine-tune); its entries for <s>, </s>, <unk> must not override their SentencePiece types.
    added += [t for t in _tokenizer_json_added(hf_dir) if t[0] >= sp.vocab_size()]
    for token_id, text, special in added:
        if token_id >= n:
            log.warning("ignoring added token %r: id %d is past the vocabulary", text, token_id)
            continue
        if special or looks_special(text):
            types[token_id] = T.CONTROL
        else:
            text, types[token_id] = text.replace("\u2581", " "), T.USER_DEFINED
        tokens[token_id], scores[token_id] = text.encode("utf-8"), -1000.0
    return tokens, scores, types


def _added_tokens(hf_dir: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) from added_tokens.json and tokenizer_config.json's added_tokens_decoder."""
    out = []
    if (hf_dir / "added_tokens.json").is_file():
        added = read_json(hf_dir / "added_tokens.json")
        validate.check_added_tokens_json(added)
        out += [(i, text, False) for text, i in added.items()]
    decoder = _tokenizer_config(hf_dir).get("added_tokens_decoder", {})
    out += [(int(i), d["content"], bool(d.get("special"))) for i, d in decoder.items()]
    return out


def _tokenizer_json_added(hf_dir: Path) -> list[tuple[int, str, bool]]:
    if not (hf_dir / "tokenizer.json").is_file():
        return []
    spec = _tokenizer_json(hf_dir)
    return [(a["id"], a["content"], bool(a.get("special"))) for a in spec.get("added_tokens", [])]


def _tokenizer_json(hf_dir: Path) -> dict:
    spec = read_json(hf_dir / "tokenizer.json")
    validate.check_tokenizer_json(spec)
    return spec


# ---- byte-level BPE ----

def _bpe_vocab(hf_dir: Path, vocab_size: int | None) -> tuple[list[str], list[int], dict]:
    spec = _tokenizer_json(hf_dir)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(spec):
        raise GGUFLMError("tokenizer.json is not a byte-level BPE tokenizer (and there is no tokenizer.model).")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {a["content"]: a for a in spec.get("added_tokens", [])}
    vocab.update({text: a["id"] for text, a in added.items()})
    n = vocab_size or (max(vocab.values()) + 1)
    if max(vocab.values()) >= n:
        raise GGUFLMError(f"tokenizer.json has token ids beyond config.json's vocab_size {n}.")
    by_id = {i: text for text, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
            continue
        if text in added:
            types.append(T.CONTROL if added[text].get("special") or looks_special(text) else T.USER_DEFINED)
        else:
            types.append(T.NORMAL)
        tokens.append(text)
    return tokens, types, spec


def _is_byte_level(spec: dict) -> bool:
    return any(p.get("type") == "ByteLevel" for p in _pretokenizers(spec))


def _pretokenizers(spec: dict) -> list[dict]:
    pre = spec.get("pre_tokenizer") or {}
    return list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]


def detect_pre(spec: dict) -> str:
    """The llama.cpp `tokenizer.ggml.pre` name for this tokenizer.json's pre-tokenizer, or a GGUFLMError."""
    signature = tuple(_step_signature(p) for p in _pretokenizers(spec))
    for name, known in KNOWN_PRE.items():
        if signature == known:
            return name
    raise GGUFLMError("the BPE pre-tokenizer in tokenizer.json is not one gguflm recognises; "
                      f"if you know its llama.cpp name, pass --pre NAME (known: {', '.join(KNOWN_PRE)}).")


def _step_signature(step: dict) -> tuple:
    kind = step.get("type")
    if kind == "Split":
        pattern = step.get("pattern") or {}
        return (kind, pattern.get("Regex"), str(step.get("behavior", "")).lower(), bool(step.get("invert")))
    if kind == "ByteLevel":
        return (kind, bool(step.get("use_regex", True)))
    if kind == "Digits":
        return (kind, bool(step.get("individual_digits")))
    return (kind, json.dumps(step, sort_keys=True))  # anything else never matches a known pipeline
