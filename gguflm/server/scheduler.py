"""The scheduler: a `waiting` queue and the `running` set, and each step's decision of who joins.

Requests wait in arrival order; one joins the running batch as soon as a slot is free (after its
prefill) and leaves it when it finishes or its client goes away, freeing the slot.
"""

from __future__ import annotations

from collections import deque

from gguflm.server.sequence import Sequence, Status
from gguflm.server.slots import SlotManager


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


class Scheduler:
    def __init__(self, slots: SlotManager, max_queue: int):
        self.slots = slots
        self.max_queue = max_queue
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting (--max-queue {self.max_queue})")
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self) -> list[Sequence]:
        """Move waiting sequences, first come first served, into free slots; returns them (to prefill)."""
        admitted = []
        while self.waiting and self.slots.free:
            seq = self.waiting.popleft()
            seq.slot = self.slots.acquire(seq.prompt)
            seq.status = Status.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def finish(self, seq: Sequence) -> None:
        """Take a sequence out of the batch (it is done, failed or abandoned) and free its slot."""
        seq.status = Status.FINISHED
        if seq in self.running:
            self.running.remove(seq)
            self.slots.release(seq.slot)

    def drop_cancelled(self) -> list[Sequence]:
        """Sequences whose clients left: out of the queue, or out of the batch with their slots freed."""
        gone = [s for s in self.waiting if s.cancelled] + [s for s in self.running if s.cancelled]
        for seq in gone:
            if seq.status is Status.WAITING:
                self.waiting.remove(seq)
            self.finish(seq)
        return gone
