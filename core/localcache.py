"""A tiny per-process TTL cache for the relay's hot path.

Keys, prices and channels are read on every request; keeping them in process
memory saves a database round trip each time. A write through the services calls
``changed``: this process drops its entry at once and again after the write's
commit, and every other process is told through Redis (``core.invalidation``)
and drops it within milliseconds. The TTL only bounds how stale an entry can get
while Redis is unreachable.

Each cache counts its invalidations: a value loaded while an invalidation arrived
is returned but not kept, so a load racing a change cannot cache the old value.
"""

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.db import connection, transaction

V = TypeVar("V")

_registry: dict[str, "TTLCache"] = {}


class TTLCache(Generic[V]):
    def __init__(self, name: str, ttl: Callable[[], float], max_entries: int = 100_000) -> None:
        self.name = name
        self._ttl = ttl
        self._max = max_entries
        self._data: dict[Hashable, tuple[float, V]] = {}
        self._generation = 0
        _registry[name] = self

    def get_or_load(self, key: Hashable, loader: Callable[[], V]) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        value = loader()
        if generation == self._generation:
            self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        from . import invalidation

        invalidation.listening()
        if len(self._data) >= self._max:
            self._data.clear()
        self._data[key] = (time.monotonic() + self._ttl(), value)

    def peek(self, key: Hashable) -> V | None:
        return self.lookup(key)[1]

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """(found, value) without loading: lets the event loop use a fresh entry
        (``None`` included) and go to a thread only on a miss."""
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def invalidate(self, key: Hashable | None = None) -> None:
        """Drop the entry (or all) in this process only."""
        self._generation += 1
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)

    def changed(self, key: Hashable | None = None) -> None:
        """What the entry (or all) is loaded from has changed: drop it here now and
        after the commit, and tell every other process once it is committed."""
        from . import invalidation

        self.invalidate(key)

        def committed() -> None:
            self.invalidate(key)
            invalidation.publish(self.name, key)

        if connection.in_atomic_block:
            transaction.on_commit(committed)
        else:
            committed()


def cache_named(name: str) -> "TTLCache | None":
    return _registry.get(name)


def clear_all() -> None:
    for cache in _registry.values():
        cache.invalidate()
