"""Stop strings over streamed text: hold back what could be the start of one, cut at the first hit."""

from __future__ import annotations

from typing import Iterable


class _Partial:
    """How much of one stop string the text so far ends with: a KMP automaton's state, its failure
    table built only as far as the text has matched, so a long stop string costs what the text does."""

    def __init__(self, stop: str):
        self.stop, self.fail, self.matched = stop, [0], 0

    def _fail(self, i: int) -> int:
        """The longest proper prefix of stop[:i + 1] that is also its suffix."""
        s, fail = self.stop, self.fail
        while len(fail) <= i:
            j = len(fail)
            k = fail[j - 1]
            while k and s[j] != s[k]:
                k = fail[k - 1]
            fail.append(k + 1 if s[j] == s[k] else 0)
        return fail[i]

    def feed(self, text: str) -> int:
        s, q = self.stop, self.matched
        for c in text:
            while q and (q == len(s) or c != s[q]):
                q = self._fail(q - 1)
            if c == s[q]:
                q += 1
        self.matched = q
        return q


class StopStrings:
    """Feed text pieces in order; each call returns the text that is safe to show and whether a stop
    string was hit (the text before it is returned, nothing after). No stops: text passes straight on."""

    def __init__(self, stops: Iterable[str] = ()):
        self.stops = [s for s in stops if s]
        self._partials = [_Partial(s) for s in self.stops]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        held = self.held + text
        if not self.stops:
            self.held = ""
            return held, False
        hit = min((held.find(s) for s in self.stops if s in held), default=-1)
        if hit >= 0:
            self.flush()
            return held[:hit], True
        # the longest tail that is a proper prefix of some stop string waits for the next piece
        keep = max(p.feed(text) for p in self._partials)
        self.held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What is held back, at the end of the text (it never became a stop string)."""
        out, self.held = self.held, ""
        for p in self._partials:
            p.matched = 0
        return out
