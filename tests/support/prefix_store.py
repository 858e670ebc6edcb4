"""One store seen under a key prefix: many tests sharing one etcd, each in its own keyspace.

The contract tests run against one etcd per module; giving each test its own prefix
keeps them independent without restarting etcd.
"""

from __future__ import annotations

from collections.abc import Iterator

from cilium_py.store.base import Event, KeyValue, Store


class PrefixStore(Store):
    def __init__(self, inner: Store, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def _out(self, kv: KeyValue) -> KeyValue:
        return KeyValue(kv.key[len(self.prefix):], kv.value, kv.mod_revision)

    def get(self, key: str) -> KeyValue | None:
        kv = self.inner.get(self.prefix + key)
        return None if kv is None else self._out(kv)

    def put(self, key: str, value: bytes) -> int:
        return self.inner.put(self.prefix + key, value)

    def delete(self, key: str) -> bool:
        return self.inner.delete(self.prefix + key)

    def list(self, prefix: str, limit: int | None = None) -> list[KeyValue]:
        return [self._out(kv) for kv in self.inner.list(self.prefix + prefix, limit)]

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes | None) -> bool:
        return self.inner.compare_and_swap(self.prefix + key, expected_revision, value)

    def revision(self) -> int:
        return self.inner.revision()

    def watch(
        self, prefix: str, start_revision: int = 0, timeout: float | None = None
    ) -> Iterator[Event]:
        for ev in self.inner.watch(self.prefix + prefix, start_revision, timeout):
            yield Event(ev.kind, ev.key[len(self.prefix):], ev.value, ev.revision)

    def status(self) -> dict[str, object]:
        return {**self.inner.status(), "prefix": self.prefix}

    def close(self) -> None:
        """The shared store is closed by its owner, not through a view of it."""
