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
    The outputs joined equal `tokenizer.decode(ids, skip_special)`; continuation=True drops no
    leading space, as when printing a generation after its already printed prompt."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True, continuation: bool = False):
        self._tok = tokenizer
        self._special = not skip_special
        self._strip_space = tokenizer.strips_leading_space and not continuation
        self._pending = bytearray()

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (often "", never a broken character)."""
        piece = self._tok.token_bytes(token_id, special=self._special)
        if self._strip_space:
            # SPM added a space in front of the text: drop it from the first token, or from the one
            # after a leading BOS that is not printed (a printed "<s>" keeps " Hello" as llama.cpp does).
            self._strip_space = not piece and token_id == self._tok.bos_id
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
