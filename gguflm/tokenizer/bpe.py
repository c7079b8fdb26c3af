"""Byte-level BPE (tokenizer.ggml.model = gpt2): the regex split, then ranked merges, run by HF `tokenizers`."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from gguflm.errors import GGUFLMError
from gguflm.tokenizer.pretokenize import PreTokenizer
from gguflm.tokenizer.vocab import Vocab


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


class BpeEncoder:
    """Encodes plain text (no special tokens) to ids with a vocabulary's merges and pre-tokenizer."""

    def __init__(self, vocab: Vocab, pre: PreTokenizer):
        t2i = vocab.token_to_id
        try:
            # Fast path: byte-level merges hold exactly one space.
            model = models.BPE(vocab=t2i, merges=[tuple(m.split(" ", 1)) for m in vocab.merges],
                               ignore_merges=pre.ignore_merges)
        except Exception:  # tokenizers rejects a merge whose parts or result are not tokens
            pairs = [(a, b) for a, b in _split_merges(vocab.merges) if a in t2i and b in t2i and a + b in t2i]
            try:
                model = models.BPE(vocab=t2i, merges=pairs, ignore_merges=pre.ignore_merges)
            except Exception as e:  # the library's error types are not public
                raise GGUFLMError(f"the BPE vocabulary and merges are inconsistent ({e})") from None
        tok = Tokenizer(model)
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

