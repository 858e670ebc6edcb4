"""Writers for the agent-owned lookup tables ``cpy_policy`` and ``cpy_ipcache``.

Why a cache: a policy change must reach the kernel as one map update per changed
entry, and finding "what the map holds for endpoint X" by walking a map of a
few hundred thousand entries for every regeneration would cost more than the
change itself. Only the agent writes these maps, so each table is read from the
kernel once (the first time it is used after ``Datapath.start()``, which picks
up what a previous agent left) and then kept in step with every write. Counters
(``updates``, ``deletes``) say how many map operations were issued, which is what
the "one update per changed entry" promise is checked against.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import bpfsys
from .ipcache import IPNetwork, prefix_of, wanted_entries
from .loader import DatapathError
from .maps import IpcacheKey, IpcacheValue, PinnedMap, PolicyKey, PolicyValue
from .policy import Diff, Entry, diff_entries, entry_from_map

_FULL = (errno.E2BIG, errno.ENOMEM, errno.ENOSPC)


def _map_error(name: str, size: int, exc: bpfsys.BpfError) -> DatapathError:
    if exc.errno in _FULL:
        return DatapathError(f"{name} is full ({size} entries): raise its size option")
    return DatapathError(f"writing {name}: {exc}")


class PolicyTable:
    """``cpy_policy`` by endpoint id, as last written."""

    def __init__(self, pmap: PinnedMap[PolicyKey, PolicyValue]) -> None:
        self._map = pmap
        self._by_ep: dict[int, dict[bytes, Entry]] = {}
        self.updates = 0
        self.deletes = 0
        for key, value in pmap.items():
            self._by_ep.setdefault(int(key.ep_id), {})[bytes(key)] = entry_from_map(key, value)

    def endpoint_ids(self) -> set[int]:
        return {ep for ep, entries in self._by_ep.items() if entries}

    def cached(self, ep_id: int) -> list[Entry]:
        return sorted(self._by_ep.get(ep_id, {}).values())

    def read(self, ep_id: int) -> list[Entry]:
        """What the kernel holds for the keys written for ``ep_id`` (one lookup each)."""
        out = []
        for packed in self._by_ep.get(ep_id, {}):
            key = PolicyKey.from_buffer_copy(packed)
            value = self._map.lookup(key)
            if value is not None:
                out.append(entry_from_map(key, value))
        return sorted(out)

    def sync(self, ep_id: int, wanted: Iterable[Entry],
             between: Callable[[], None] | None = None) -> dict[str, int]:
        """Make the endpoint's entries ``wanted``: new and changed entries first,
        then ``between()`` (the endpoint's flags), then the deletions. That order
        never leaves a flags word pointing at shapes with no entries written yet,
        and never removes an entry while the flags still promise it."""
        current = self._by_ep.setdefault(ep_id, {})
        diff: Diff = diff_entries(ep_id, current, wanted)
        size = self._map.info.max_entries
        for packed, entry in diff.write.items():
            try:
                self._map.update(entry.key(ep_id), entry.value())
            except bpfsys.BpfError as exc:
                raise _map_error("cpy_policy", size, exc) from exc
            self.updates += 1
            current[packed] = entry
        if between is not None:
            between()
        for packed in diff.delete:
            self._map.delete(PolicyKey.from_buffer_copy(packed))
            self.deletes += 1
            current.pop(packed, None)
        if not current:
            self._by_ep.pop(ep_id, None)
        return {"added": diff.added, "changed": diff.changed, "removed": len(diff.delete)}

    def remove(self, ep_id: int) -> int:
        """Delete every entry of ``ep_id``; returns how many went."""
        current = self._by_ep.pop(ep_id, {})
        for packed in current:
            self._map.delete(PolicyKey.from_buffer_copy(packed))
            self.deletes += 1
        return len(current)


class IpcacheTable:
    """``cpy_ipcache`` as last written: packed key -> (prefix, identity)."""

    def __init__(self, imap: PinnedMap[IpcacheKey, IpcacheValue]) -> None:
        self._map = imap
        self._entries: dict[bytes, tuple[IPNetwork, int]] = {}
        self.updates = 0
        self.deletes = 0
        for key, value in imap.items():
            self._entries[bytes(key)] = (prefix_of(key), int(value.identity))

    @staticmethod
    def _parse(mapping: Mapping[str, int]) -> dict[bytes, tuple[IPNetwork, int]]:
        try:
            return wanted_entries(mapping)
        except ValueError as exc:
            raise DatapathError(str(exc)) from exc

    def _write(self, wanted: Mapping[bytes, tuple[IPNetwork, int]]) -> tuple[int, int]:
        """Write the entries that differ from the map; returns (added, changed)."""
        size = self._map.info.max_entries
        added = changed = 0
        for packed, (prefix, identity) in wanted.items():
            have = self._entries.get(packed)
            if have is not None and have[1] == identity:
                continue
            try:
                self._map.update(IpcacheKey.from_buffer_copy(packed),
                                 IpcacheValue(identity=identity))
            except bpfsys.BpfError as exc:
                raise _map_error("cpy_ipcache", size, exc) from exc
            self.updates += 1
            if have is None:
                added += 1
            else:
                changed += 1
            self._entries[packed] = (prefix, identity)
        return added, changed

    def _delete(self, packed_keys: Iterable[bytes]) -> int:
        removed = 0
        for packed in packed_keys:
            if packed not in self._entries:
                continue
            self._map.delete(IpcacheKey.from_buffer_copy(packed))
            self.deletes += 1
            removed += 1
            del self._entries[packed]
        return removed

    def sync(self, mapping: Mapping[str, int]) -> dict[str, int]:
        """Make the map hold exactly ``mapping`` (prefix -> identity)."""
        wanted = self._parse(mapping)
        added, changed = self._write(wanted)
        removed = self._delete([p for p in self._entries if p not in wanted])
        return {"added": added, "changed": changed, "removed": removed}

    def update(self, upsert: Mapping[str, int], remove: Iterable[str]) -> dict[str, int]:
        """Change only the named entries: what one endpoint coming or going needs,
        at a cost that does not grow with the number of entries."""
        wanted = self._parse(upsert)
        gone = self._parse({text: 1 for text in remove})
        added, changed = self._write(wanted)
        removed = self._delete([p for p in gone if p not in wanted])
        return {"changed": added + changed, "removed": removed}

    def rows(self) -> list[dict[str, Any]]:
        """The kernel's entries (read back, not the cache), for ``bpf ipcache list``."""
        rows = [{"prefix": str(prefix_of(key)), "identity": int(value.identity)}
                for key, value in self._map.items()]
        rows.sort(key=lambda r: (":" in r["prefix"], r["prefix"]))
        return rows
