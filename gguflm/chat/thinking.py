"""Reasoning models' `<think>...</think>` part: split it from the answer as the text streams."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def thinking_open(prompt: str) -> bool:
    """True when a rendered prompt leaves a <think> block open (the reply starts inside it)."""
    return prompt.rfind(OPEN) > prompt.rfind(CLOSE)


class ThinkingSplitter:
    """Splits streamed text into (thinking, text) runs at <think> and </think>, even when a tag is cut."""

    def __init__(self, thinking: bool = False):
        self.thinking = thinking
        self._held = ""
        self._answer_started = False  # a <think> after answer text is just text
        self._strip = False  # drop the blank lines between </think> and the answer

    def feed(self, text: str) -> list[tuple[bool, str]]:
        buf, out = self._held + text, []
        while True:
            tag = CLOSE if self.thinking else OPEN
            at = buf.find(tag)
            if at < 0 or (not self.thinking and (self._answer_started or buf[:at].strip())):
                break
            self._emit(out, buf[:at])
            self.thinking = not self.thinking
            self._strip = not self.thinking
            buf = buf[at + len(tag) :]
        keep = 0
        if self.thinking or not self._answer_started:
            tag = CLOSE if self.thinking else OPEN
            keep = max((k for k in range(1, len(tag)) if buf.endswith(tag[:k])), default=0)
        self._held = buf[len(buf) - keep :]
        self._emit(out, buf[: len(buf) - keep])
        return out

    def flush(self) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        self._emit(out, self._held)
        self._held = ""
        return out

    def _emit(self, out: list, text: str) -> None:
        if not self.thinking and self._strip:
            text = text.lstrip("\n")
            self._strip = not text
        if text:
            out.append((self.thinking, text))
            if not self.thinking and text.strip():
                self._answer_started = True
