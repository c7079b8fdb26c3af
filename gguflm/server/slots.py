"""The slot manager: which of the engine's cache slots are free, and which one a new prompt should take.

A free slot keeps what it last held, so a follow-up request (the next chat turn, the same system
prompt) is given the slot with the longest common prefix and prefills only the rest; among equals,
the slot used longest ago.
"""

from __future__ import annotations

import itertools

from gguflm.engine import Engine, common_prefix


class SlotManager:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.free: set[int] = set(range(engine.n_slots))
        self._used = {s: 0 for s in self.free}  # when each slot was last taken
        self._clock = itertools.count(1)

    @property
    def busy(self) -> int:
        return self.engine.n_slots - len(self.free)

    def acquire(self, prompt: list[int]) -> int | None:
        """Take a free slot for `prompt` (None when all are busy)."""
        if not self.free:
            return None
        held = self.engine.slot_tokens
        slot = max(self.free, key=lambda s: (common_prefix(held[s], prompt), -self._used[s]))
        self.free.remove(slot)
        self._used[slot] = next(self._clock)
        return slot

    def release(self, slot: int) -> None:
        self.free.add(slot)
