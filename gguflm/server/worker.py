"""The worker: one thread that owns the engine and runs the serving loop.

Each turn: drop sequences whose clients left, admit waiting ones into free slots and prefill them
(their first token comes from the prefill), then run one batched decode step over every running
sequence and sample each row with that sequence's own sampler. The HTTP side only submits
sequences and raises their `cancelled` flag; tokens come back through each sequence's `deliver`.
"""

from __future__ import annotations

import sys
import threading
import traceback

import torch

from gguflm.engine import Engine
from gguflm.errors import GGUFLMError
from gguflm.server.errors import APIError
from gguflm.server.metrics import Metrics
from gguflm.server.scheduler import Scheduler
from gguflm.server.sequence import Sequence


class Worker:
    def __init__(self, engine: Engine, scheduler: Scheduler, metrics: Metrics):
        self.engine, self.scheduler, self.metrics = engine, scheduler, metrics
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gguflm-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence (QueueFull when the queue is at its limit)."""
        with self._cond:
            self.scheduler.add(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """The client left: the sequence leaves the queue or the batch at the next step."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.scheduler.has_work:
                    self._cond.wait()
                if self._stopping:
                    return
                for seq in self.scheduler.drop_cancelled():
                    self.metrics.finished.labels("cancelled").inc()
                admitted = self.scheduler.admit()
                running = [s for s in self.scheduler.running if s not in admitted]
            for seq in admitted:
                self._guard([seq], self._prefill, seq)
            if running:
                self._guard(running, self._decode, running)

    def _guard(self, seqs: list[Sequence], fn, *args) -> None:
        """Run one prefill or step; a failure ends the sequences involved with an error, not the server."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported to the clients and on stderr; the server goes on
            if isinstance(e, GGUFLMError):
                error = APIError(400, str(e), code="invalid_request")
            else:
                traceback.print_exc(file=sys.stderr)
                error = APIError(500, f"the model failed on this request: {type(e).__name__}: {e}", code="internal")
            with self._cond:
                for seq in seqs:
                    self.engine.reset(seq.slot)  # what the slot holds is unknown after a failed step
                    seq.fail(error)
                    self.scheduler.finish(seq)
                    self.metrics.finished.labels("error").inc()
            for seq in seqs:
                seq.deliver(seq.final)

    def _prefill(self, seq: Sequence) -> None:
        engine = self.engine
        logits = engine.start(seq.slot, seq.prompt)
        seq.cached = len(seq.prompt) - engine.stats.last.prefilled_tokens
        self.metrics.prompt_tokens.inc(len(seq.prompt))
        self.metrics.cached_tokens.inc(seq.cached)
        token = seq.sampler.pick(logits, engine.slot_tokens[seq.slot])
        self.metrics.token()
        self._accept(seq, token, logits)

    @torch.inference_mode()
    def _decode(self, running: list[Sequence]) -> None:
        engine = self.engine
        logits = engine.step([s.slot for s in running], [s.last for s in running])  # (B, n_vocab)
        greedy = logits.argmax(dim=-1).tolist()  # one sync for every argmax-only row
        self.metrics.step(len(running))
        for b, seq in enumerate(running):
            if seq.sampler.params.argmax_only:
                token = greedy[b]
            else:
                token = seq.sampler.pick(logits[b], engine.slot_tokens[seq.slot])
            self._accept(seq, token, logits[b])

    def _accept(self, seq: Sequence, token: int, logits: torch.Tensor) -> None:
        room = self.engine.ctx - len(self.engine.slot_tokens[seq.slot])
        if seq.accept(token, logits, room):
            with self._cond:
                self.scheduler.finish(seq)
            self.metrics.finished.labels(seq.finish_reason).inc()
            seq.deliver(seq.final)  # after the slot is free: a client that sees its end sees the slot free
