"""BPE (tokenizer.ggml.model gpt2, gemma4, whitespace): the regex split, then ranked merges, run by HF `tokenizers`."""

from __future__ import annotations

import re

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from gguflm.errors import GGUFLMError
from gguflm.tokenizer.pretokenize import PreTokenizer
from gguflm.tokenizer.vocab import Vocab

SPACE = "\u2581"  # "▁": the space of SentencePiece-style vocabularies


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_NEWLINE_RUNS = re.compile(r"[^\n]+|\n+")


def decode_byte_chars(text: str) -> bytes:
    """A byte-level token text back to its bytes; a character outside the map stays as its UTF-8."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError:
        return b"".join(bytes([CHAR_TO_BYTE[c]]) if c in CHAR_TO_BYTE else c.encode() for c in text)


def _split_merges(merges: list[str]) -> list[tuple[str, str]]:
    # llama.cpp splits at the first space after the first character.
    pairs = []
    for m in merges:
        pos = m.find(" ", 1)
        if pos > 0:
            pairs.append((m[:pos], m[pos + 1:]))
    return pairs


def _bpe_model(vocab: Vocab, pre: PreTokenizer) -> models.BPE:
    t2i = vocab.token_to_id
    options = {"ignore_merges": pre.ignore_merges, "byte_fallback": not pre.byte_encode}
    try:
        # Fast path: merges hold exactly one space.
        return models.BPE(vocab=t2i, merges=[tuple(m.split(" ", 1)) for m in vocab.merges], **options)
    except Exception:  # tokenizers rejects a merge whose parts or result are not tokens
        pairs = [(a, b) for a, b in _split_merges(vocab.merges) if a in t2i and b in t2i and a + b in t2i]
        try:
            return models.BPE(vocab=t2i, merges=pairs, **options)
        except Exception as e:  # the library's error types are not public
            raise GGUFLMError(f"the BPE vocabulary and merges are inconsistent ({e})") from None


class BpeEncoder:
    """Encodes plain text (no special tokens) to ids with a vocabulary's merges and pre-tokenizer."""

    def __init__(self, vocab: Vocab, pre: PreTokenizer):
        self._pre = pre
        self._t2i = vocab.token_to_id
        # The whitespace model drops whitespace and tokenizes what is left, word by word.
        self._by_word = vocab.model == "whitespace"
        self._lowercase = self._by_word and vocab.lowercase
        # gemma4: newline runs are split off here, so a run that is one token can be taken whole.
        self._by_line = pre.newline_tokens
        splits = [] if self._by_line else [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        self._split = pre_tokenizers.Sequence(splits) if splits else None
        tok = Tokenizer(_bpe_model(vocab, pre))
        byte_level = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)] if pre.byte_encode else []
        steps = splits + byte_level
        if steps:
            tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        if self._pre.escape_spaces:
            text = text.replace(" ", SPACE)
        if self._by_word:
            return [i for word in self.words(text) for i in self._encode(word)]
        if self._by_line:
            out: list[int] = []
            for run in _NEWLINE_RUNS.findall(text):
                whole = self._t2i.get(run) if run[0] == "\n" else None
                out.extend([whole] if whole is not None else self._encode(run))
            return out
        return self._encode(text)

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

    def words(self, text: str) -> list[str]:
        """The pre-tokens the merges run on, as text (spaces already escaped where the vocab does that)."""
        if self._pre.escape_spaces:
            text = text.replace(" ", SPACE)
        if self._by_word:
            return (text.lower() if self._lowercase else text).split()
        if self._by_line:
            return _NEWLINE_RUNS.findall(text)
        if self._split is None or not text:
            return [text] if text else []
        return [w for w, _ in self._split.pre_tokenize_str(text)]
