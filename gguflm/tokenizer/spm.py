"""SentencePiece-style tokenization (tokenizer.ggml.model = llama): llama.cpp's score-ranked bigram merges."""

from __future__ import annotations

import heapq

from gguflm.tokenizer.vocab import Vocab

SPACE = "\u2581"  # "▁", SentencePiece's visible space


class SpmEncoder:
    """Merges adjacent symbols, highest-scoring resulting token first, then falls back to byte tokens."""

    def __init__(self, vocab: Vocab):
        self._t2i = vocab.token_to_id
        self._scores = vocab.scores
        self._unk = vocab.unk_id
        # <0xXX> byte tokens, else the one-character token llama.cpp also accepts.
        self._byte_ids = [self._t2i.get(f"<0x{b:02X}>", self._t2i.get(chr(b))) for b in range(256)]

    def encode(self, text: str) -> list[int]:
        """Ids for one fragment of plain text, already escaped (spaces as "▁")."""
        if not text:
            return []
        t2i, scores = self._t2i, self._scores
        # Symbols are characters; a merged symbol keeps its text in syms[left], the right one empties.
        syms = list(text)
        prev = list(range(-1, len(syms) - 1))
        nxt = list(range(1, len(syms) + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            tid = t2i.get(syms[left] + syms[right])
            if tid is not None:
                # Highest score first; ties go to the leftmost pair, as in llama.cpp's comparator.
                heapq.heappush(heap, (-scores[tid], left, right, len(syms[left]) + len(syms[right])))

        for i in range(1, len(syms)):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = syms[left], syms[right]
            if not a or not b or len(a) + len(b) != size:
                continue  # one side was merged since this pair was queued
            syms[left], syms[right] = a + b, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            tid = t2i.get(syms[i])
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._bytes(syms[i]))
            i = nxt[i]
        return out

    def _bytes(self, symbol: str) -> list[int]:
        # Merges only ever form tokens, so an unknown symbol is one character: emit its UTF-8 bytes.
        ids = []
        for b in symbol.encode("utf-8"):
            tid = self._byte_ids[b]
            if tid is None:
                tid = self._unk
            if tid is not None:
                ids.append(tid)
        return ids
