"""A `Sequence` per request: its prompt ids, its slot, its sampler and stop rules, what it has generated.

The worker thread feeds it each sampled token (`accept`); it turns tokens into text (UTF-8-safe,
stop strings held back and cut), decides when it is done and hands `Event`s to the HTTP side
through `deliver` (thread-safe).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from gguflm.sampling import Sampler
from gguflm.stop_strings import StopStrings


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TokenLogprob:
    """A generated token's log-probability (under the model's distribution) and the likeliest alternatives."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]]


@dataclass
class Event:
    """Text released since the last event; `finish` set on the last one ("stop", "length" or "error")."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    error: Exception | None = None


class Sequence:
    """One request's generation, from the queue through its slot to its last token."""

    def __init__(self, prompt: list[int], max_tokens: int, sampler: Sampler, tokenizer, stop_ids: frozenset[int],
                 stop_strings: list[str], n_logprobs: int | None, deliver: Callable[[Event], None]):
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.n_logprobs = n_logprobs  # None: no logprobs; k: the chosen token's and the k likeliest
        self.deliver = deliver
        self.status = Status.WAITING
        self.slot: int | None = None
        self.output: list[int] = []  # every sampled id (an end-of-generation id included)
        self.cached = 0  # prompt tokens the slot already held
        self.finish_reason: str | None = None
        self.cancelled = False  # set by the HTTP side when the client goes away
        self.arrived = time.perf_counter()
        self.first_token_at: float | None = None
        # generated text keeps every piece's leading space, as llama-server's does
        self._decoder = tokenizer.stream(continuation=True)
        self._stops = StopStrings(stop_strings)
        self._pending: list[TokenLogprob] = []
        self.final: Event | None = None  # the last event, once the sequence is done

    @property
    def last(self) -> int:
        """The token the next decode step feeds."""
        return self.output[-1]

    def accept(self, token: int, logits: torch.Tensor, room: int) -> bool:
        """Take a sampled token (logits (n_vocab,) it was drawn from; `room`: positions left in the slot
        after the tokens fed so far); deliver its text; True when the sequence is done, its last event
        then waiting in `final` for the caller to deliver once the slot is freed."""
        self.output.append(token)
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.n_logprobs is not None:
            self._pending.append(self._logprob(token, logits))
        if token in self.stop_ids:  # end of generation: not shown
            return self._finish("stop", "")
        text, hit = self._stops.feed(self._decoder.feed(token))
        if hit:
            return self._finish("stop", text, flushed=True)
        if len(self.output) >= self.max_tokens or room < 1:  # room: the next step writes this token's row
            return self._finish("length", text)
        if text or self._pending:
            self.deliver(Event(text, self._take_logprobs()))
        return False

    def fail(self, error: Exception) -> None:
        self.status = Status.FINISHED
        self.finish_reason = "error"
        self.final = Event(finish="error", error=error)

    def _finish(self, reason: str, text: str, flushed: bool = False) -> bool:
        if not flushed:  # what the decoder and the stop strings held back is text after all
            tail, hit = self._stops.feed(self._decoder.flush())
            text += tail + ("" if hit else self._stops.flush())
            reason = "stop" if hit else reason
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.final = Event(text, self._take_logprobs(), finish=reason)
        return True

    def _take_logprobs(self) -> list[TokenLogprob]:
        out, self._pending = self._pending, []
        return out

    def _logprob(self, token: int, logits: torch.Tensor) -> TokenLogprob:
        lp = torch.log_softmax(logits.float(), dim=-1)
        top = lp.topk(self.n_logprobs) if self.n_logprobs else None
        alternatives = [] if top is None else [self._entry(int(i), float(v)) for v, i in zip(*top)]
        return TokenLogprob(*self._entry(token, float(lp[token])), alternatives)

    def _entry(self, token: int, logprob: float) -> tuple[str, float, list[int]]:
        raw = self.tokenizer.token_bytes(token)
        return raw.decode("utf-8", errors="replace"), logprob, list(raw)

    # ------------------------------------------------------------------ usage

    @property
    def usage(self) -> dict:
        n = len(self.output)
        return {"prompt_tokens": len(self.prompt), "completion_tokens": n, "total_tokens": len(self.prompt) + n,
                "prompt_tokens_details": {"cached_tokens": self.cached}}
