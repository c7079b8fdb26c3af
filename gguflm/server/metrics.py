"""Prometheus metrics of one server: requests, tokens, queue depth, slot use, decode speed."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

RATE_WINDOW = 10.0  # seconds of decode steps the tokens/s gauge averages over

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters the worker and the HTTP side update; gauges read from the scheduler at scrape time."""

    def __init__(self, scheduler, n_slots: int):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gguflm_requests", "Requests received, by endpoint", ["endpoint"], registry=r)
        self.finished = Counter("gguflm_requests_finished", "Requests finished, by finish reason", ["reason"],
                                registry=r)
        self.rejected = Counter("gguflm_requests_rejected", "Requests answered with an error, by HTTP status",
                                ["status"], registry=r)
        self.prompt_tokens = Counter("gguflm_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.cached_tokens = Counter("gguflm_prompt_tokens_cached", "Prompt tokens reused from a slot's cache",
                                     registry=r)
        self.generated = Counter("gguflm_generated_tokens", "Tokens generated", registry=r)
        self.steps = Counter("gguflm_decode_steps", "Batched decode steps run", registry=r)
        self.stepped_rows = Counter("gguflm_decode_rows", "Sequences decoded, summed over steps", registry=r)
        Gauge("gguflm_requests_waiting", "Requests in the queue", registry=r).set_function(
            lambda: len(scheduler.waiting))
        Gauge("gguflm_requests_running", "Requests holding a slot", registry=r).set_function(
            lambda: len(scheduler.running))
        Gauge("gguflm_slots_busy", "Cache slots in use", registry=r).set_function(lambda: scheduler.slots.busy)
        Gauge("gguflm_slots_total", "Cache slots", registry=r).set(n_slots)
        Gauge("gguflm_decode_tokens_per_second", f"Tokens generated per second over the last {RATE_WINDOW:g} s",
              registry=r).set_function(self.tokens_per_second)
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recent steps
        self._lock = threading.Lock()

    def step(self, rows: int) -> None:
        """One decode step of `rows` sequences."""
        self.steps.inc()
        self.stepped_rows.inc(rows)
        self.token(rows)

    def token(self, n: int = 1) -> None:
        self.generated.inc(n)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, n))
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._recent if t >= now - RATE_WINDOW]
        if len(recent) < 2:
            return 0.0
        return sum(n for _, n in recent[1:]) / max(now - recent[0][0], 1e-9)

    def render(self) -> bytes:
        return generate_latest(self.registry)
