"""Incremental detokenization: feed ids one at a time, get back only complete UTF-8 text."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gguflm.tokenizer.tokenizer import Tokenizer


def complete_prefix(buf: bytes | bytearray) -> int:
    """Length of the longest prefix of buf that does not end inside a multi-byte UTF-8 character."""
    n = len(buf)
    for back in range(1, min(4, n) + 1):
        b = buf[n - back]
        if b & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if 0xC0 <= b < 0xF8:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n - back if need > back else n
        return n  # ASCII or an invalid byte: nothing to wait for
    return n


class StreamDecoder:
    """Turns a token stream into text; partial characters wait for their remaining bytes.

    The pieces are llama.cpp's token_to_piece, as llama-completion and llama-server print them. With
    continuation=False the first token loses one leading space where the vocab adds a space prefix
    (SentencePiece), as llama_detokenize does; a hidden BOS counts as that first token, so "<s>▁Hi"
    keeps its space. The outputs joined equal `tokenizer.decode(ids, skip_special)` except for the
    space clean-up decode applies for some BPE vocabs (`tokenizer.clean_spaces`)."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True, continuation: bool = False):
        self._tok = tokenizer
        self._special = not skip_special
        self._strip_space = tokenizer.strips_leading_space and not continuation
        self._pending = bytearray()

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (often "", never a broken character)."""
        piece = self._tok.token_bytes(token_id, special=self._special)
        if self._strip_space:
            self._strip_space = False
            if piece.startswith(b" "):
                piece = piece[1:]
        if not piece:
            return ""
        self._pending += piece
        cut = complete_prefix(self._pending)
        if cut == 0:
            return ""
        text = self._pending[:cut].decode("utf-8", errors="replace")
        del self._pending[:cut]
        return text

    def flush(self) -> str:
        """Whatever is held back (an unfinished character becomes U+FFFD); the decoder can go on after it."""
        text = self._pending.decode("utf-8", errors="replace")
        self._pending.clear()
        return text
