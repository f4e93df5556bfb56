"""A tiny per-process TTL cache for the relay's hot path.

Keys, prices and channels are read on every request; keeping them in process
memory for a few seconds saves a database round trip each time. Writes through the
services invalidate the local entry at once; other processes see a change within
the TTL.
"""

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_registry: list["TTLCache"] = []


class TTLCache(Generic[V]):
    def __init__(self, ttl: Callable[[], float], max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._data: dict[Hashable, tuple[float, V]] = {}
        _registry.append(self)

    def get_or_load(self, key: Hashable, loader: Callable[[], V]) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = loader()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
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
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)


def clear_all() -> None:
    for cache in _registry:
        cache.invalidate()
