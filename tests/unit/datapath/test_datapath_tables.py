"""The cpy_policy / cpy_ipcache writers against an in-memory map (no kernel)."""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.datapath import DatapathError
from cilium_py.datapath.bpfsys import BpfError
from cilium_py.datapath.maps import POLICY_INGRESS
from cilium_py.datapath.policy import Entry
from cilium_py.datapath.tables import IpcacheTable, PolicyTable


@dataclass
class Info:
    max_entries: int


class FakeMap:
    """Enough of PinnedMap: a dict of packed keys, and the order of operations."""

    def __init__(self, key_type: Any, value_type: Any, max_entries: int = 100) -> None:
        self.key_type, self.value_type = key_type, value_type
        self.data: dict[bytes, bytes] = {}
        self.ops: list[str] = []
        self.info = Info(max_entries)

    def update(self, key: ctypes.Structure, value: ctypes.Structure) -> None:
        if bytes(key) not in self.data and len(self.data) >= self.info.max_entries:
            raise BpfError(errno.E2BIG, "full")
        self.ops.append("update")
        self.data[bytes(key)] = bytes(value)

    def delete(self, key: ctypes.Structure) -> bool:
        self.ops.append("delete")
        return self.data.pop(bytes(key), None) is not None

    def lookup(self, key: ctypes.Structure) -> Any:
        raw = self.data.get(bytes(key))
        return None if raw is None else self.value_type.from_buffer_copy(raw)

    def items(self) -> Any:
        for k, v in list(self.data.items()):
            yield self.key_type.from_buffer_copy(k), self.value_type.from_buffer_copy(v)


def policy_map(max_entries: int = 100) -> FakeMap:
    from cilium_py.datapath.maps import PolicyKey, PolicyValue

    return FakeMap(PolicyKey, PolicyValue, max_entries)


def e(identity: int, port: int = 0, protocol: int = 0) -> Entry:
    return Entry(direction=POLICY_INGRESS, identity=identity, port=port, protocol=protocol)


def test_policy_sync_writes_then_flags_then_deletes() -> None:
    fake = policy_map()
    table = PolicyTable(fake)  # type: ignore[arg-type]
    assert table.sync(7, [e(1001), e(1002)]) == {"added": 2, "changed": 0, "removed": 0}
    fake.ops.clear()
    result = table.sync(7, [e(1001), e(1003)], between=lambda: fake.ops.append("flags"))
    assert result == {"added": 1, "changed": 0, "removed": 1}
    assert fake.ops == ["update", "flags", "delete"]
    assert table.cached(7) == [e(1001), e(1003)]
    assert table.read(7) == [e(1001), e(1003)]
    assert (table.updates, table.deletes) == (3, 1)


def test_policy_table_picks_up_what_the_map_holds() -> None:
    fake = policy_map()
    PolicyTable(fake).sync(7, [e(1001), e(1002)])  # type: ignore[arg-type]
    PolicyTable(fake).sync(8, [e(1001)])  # type: ignore[arg-type]
    fresh = PolicyTable(fake)  # type: ignore[arg-type]  # e.g. after an agent restart
    assert fresh.endpoint_ids() == {7, 8}
    fake.ops.clear()
    assert fresh.sync(7, [e(1001), e(1002)]) == {"added": 0, "changed": 0, "removed": 0}
    assert fake.ops == []
    assert fresh.remove(7) == 2
    assert fresh.endpoint_ids() == {8}
    assert len(fake.data) == 1


def test_policy_map_full_is_a_datapath_error() -> None:
    table = PolicyTable(policy_map(max_entries=1))  # type: ignore[arg-type]
    with pytest.raises(DatapathError, match="cpy_policy is full"):
        table.sync(7, [e(1001), e(1002)])
    assert len(table.cached(7)) == 1  # the cache still matches the map


def test_ipcache_sync() -> None:
    from cilium_py.datapath.maps import IpcacheKey, IpcacheValue

    fake = FakeMap(IpcacheKey, IpcacheValue)
    table = IpcacheTable(fake)  # type: ignore[arg-type]
    first = {"10.200.0.5/32": 256, "fd10:200::5/128": 256, "198.51.100.0/24": 300,
             "10.200.0.1/32": 1}
    assert table.sync(first) == {"added": 4, "changed": 0, "removed": 0}
    fake.ops.clear()
    assert table.sync(first) == {"added": 0, "changed": 0, "removed": 0}
    assert fake.ops == []
    second = dict(first, **{"198.51.100.0/24": 301})
    del second["fd10:200::5/128"]
    assert table.sync(second) == {"added": 0, "changed": 1, "removed": 1}
    assert fake.ops == ["update", "delete"]
    with pytest.raises(DatapathError, match="identity out of range"):
        table.sync({"10.0.0.1": -1})
