"""A named table of records (architectures, quant formats) that modules register into once."""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class Registry(Generic[V]):
    """Records by key, in registration order; `key` says how a record is keyed."""

    def __init__(self, key: Callable[[V], Hashable]):
        self._key = key
        self._items: dict[Hashable, V] = {}

    def register(self, record: V) -> V:
        self._items[self._key(record)] = record
        return record

    def unregister(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def lookup(self, key: Hashable) -> V | None:
        return self._items.get(key)

    def values(self) -> tuple[V, ...]:
        return tuple(self._items.values())
