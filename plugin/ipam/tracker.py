"""In-memory view of which offsets of a pool are taken, with a rotating cursor.

The store is the authority; this is only a hint that lets ``allocate`` pick a
candidate without listing the store. It may be stale (another process allocated or
released): a stale "free" hint is caught by the store's create-if-absent and the
candidate is marked used; a stale "used" hint is corrected by ``reset`` from a store
listing, which the allocator does when the hint says the pool is full.

The cursor moves forward and wraps, so a released address is reused last rather
than first: a new endpoint does not inherit a just-deleted one's address while
neighbour caches, conntrack entries or peers may still remember it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class OffsetTracker:
    """Thread-safe set of used offsets in ``[first, last]`` plus a cursor."""

    def __init__(self, first: int, last: int) -> None:
        self._first = first
        self._last = last
        self._used: set[int] = set()
        self._cursor = first
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._last - self._first + 1

    def reset(self, used: Iterable[int]) -> None:
        """Replace the view with what the store holds now."""
        with self._lock:
            self._used = {o for o in used if self._first <= o <= self._last}

    def take_next(self) -> int | None:
        """Reserve and return the next offset believed free, or None when full."""
        with self._lock:
            if len(self._used) >= self.capacity:
                return None
            offset = self._cursor
            while offset in self._used:
                offset = offset + 1 if offset < self._last else self._first
            self._used.add(offset)
            self._cursor = offset + 1 if offset < self._last else self._first
            return offset

    def mark_used(self, offset: int) -> None:
        with self._lock:
            if self._first <= offset <= self._last:
                self._used.add(offset)

    def mark_free(self, offset: int) -> None:
        with self._lock:
            self._used.discard(offset)

    def used_count(self) -> int:
        with self._lock:
            return len(self._used)
