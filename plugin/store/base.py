"""The store interface every backend implements.

Callers only see this module: the embedded SQLite store today and an etcd store later
must be interchangeable, so the contract is deliberately small and etcd-shaped (a flat
keyspace of strings, per-key modification revisions, a global revision counter that
watches resume from).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass


class StoreError(Exception):
    """A backend failed in a way callers cannot fix by retrying with other input."""


@dataclass(frozen=True)
class KeyValue:
    """One stored key; ``mod_revision`` is the global revision of its last write."""

    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """A change seen by ``watch``; ``value`` is None for a delete."""

    kind: str  # "put" | "delete"
    key: str
    value: bytes | None
    revision: int


class Store(abc.ABC):
    """A durable key-value store with compare-and-swap and prefix watches."""

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None:
        """Return the key or None when it does not exist."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new global revision."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""

    @abc.abstractmethod
    def list(self, prefix: str, limit: int | None = None) -> list[KeyValue]:
        """Keys starting with ``prefix``, sorted by key (the first ``limit`` of them)."""

    @abc.abstractmethod
    def compare_and_swap(self, key: str, expected_revision: int, value: bytes | None) -> bool:
        """Write (or delete, when ``value`` is None) only if the key's ``mod_revision``
        equals ``expected_revision``; 0 means "the key must not exist". True on success.
        """

    @abc.abstractmethod
    def revision(self) -> int:
        """The current global revision (0 for an empty store)."""

    @abc.abstractmethod
    def watch(
        self, prefix: str, start_revision: int = 0, timeout: float | None = None
    ) -> Iterator[Event]:
        """Yield changes under ``prefix`` after ``start_revision`` as they happen.

        Stops after ``timeout`` seconds without a change (None: never).
        """

    def create(self, key: str, value: bytes) -> bool:
        """Write only if the key does not exist yet."""
        return self.compare_and_swap(key, 0, value)

    def status(self) -> dict[str, object]:
        """A health summary for /v1/healthz."""
        return {"backend": type(self).__name__, "revision": self.revision()}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default backend has nothing to release."""
