"""Stop strings over streamed text: hold back what could be the start of one, cut at the first hit."""

from __future__ import annotations

from typing import Iterable


class StopStrings:
    """Feed text pieces in order; each call returns the text that is safe to show and whether a stop
    string was hit (the text before it is returned, nothing after). No stops: text passes straight on."""

    def __init__(self, stops: Iterable[str] = ()):
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        held = self.held + text
        if not self.stops:
            self.held = ""
            return held, False
        hit = min((held.find(s) for s in self.stops if s in held), default=-1)
        if hit >= 0:
            self.held = ""
            return held[:hit], True
        # the longest tail that is a proper prefix of some stop string waits for the next piece
        # (no longer than `held` itself: a long stop string costs what the text is, not what it is)
        keep = max((k for s in self.stops for k in range(1, min(len(s), len(held) + 1)) if held.endswith(s[:k])),
                   default=0)
        self.held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What is held back, at the end of the text (it never became a stop string)."""
        out, self.held = self.held, ""
        return out
