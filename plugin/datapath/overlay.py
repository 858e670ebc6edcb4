"""The overlay maps: which node holds which endpoint range, and the tunnel device.

``cpy_tunnel`` maps each remote node's endpoint ranges to that node's address; the
endpoint programs send matching traffic into the VXLAN device named in ``cpy_node``
with the sender's identity as the tunnel id (bpf/lib/overlay.h). Like the ipcache, the
agent gives the full desired content and only the difference is written.
"""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Mapping
from typing import Any

from . import bpfsys
from .ipcache import ipcache_key, parse_prefix, prefix_of
from .loader import DatapathError
from .maps import AF_INET, AF_INET6, NodeConfig, PinnedMap, TunnelValue, addr_str


def tunnel_value(node_address: str) -> TunnelValue:
    addr = ipaddress.ip_address(node_address)
    value = TunnelValue(family=AF_INET if addr.version == 4 else AF_INET6)
    ctypes.memmove(value.node_addr, addr.packed, len(addr.packed))
    return value


class TunnelTable:
    """``cpy_tunnel`` as last written (read from the kernel once)."""

    def __init__(self, tmap: PinnedMap[Any, TunnelValue]) -> None:
        self._map = tmap
        self._current: dict[bytes, bytes] = {bytes(k): bytes(v) for k, v in tmap.items()}

    def sync(self, ranges: Mapping[str, str]) -> dict[str, int]:
        """Make the map hold exactly ``ranges`` (prefix -> node address)."""
        wanted = {}
        for prefix, node in ranges.items():
            try:
                key = ipcache_key(parse_prefix(prefix))
                value = tunnel_value(node)
            except ValueError as exc:
                raise DatapathError(f"tunnel route {prefix} -> {node}: {exc}") from exc
            wanted[bytes(key)] = (key, value)
        added = removed = 0
        for packed, (key, value) in wanted.items():
            if self._current.get(packed) == bytes(value):
                continue
            try:
                self._map.update(key, value)
            except bpfsys.BpfError as exc:
                size = self._map.info.max_entries
                raise DatapathError(f"cpy_tunnel ({size} entries): {exc}") from exc
            self._current[packed] = bytes(value)
            added += 1
        for packed in [p for p in self._current if p not in wanted]:
            self._map.delete(self._map.key_type.from_buffer_copy(packed))
            del self._current[packed]
            removed += 1
        return {"written": added, "removed": removed}

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for key, value in self._map.items():
            out.append({"prefix": str(prefix_of(key)),
                        "node": addr_str(value.node_addr, int(value.family))})
        return sorted(out, key=lambda r: r["prefix"])


def set_node_config(nmap: PinnedMap[Any, NodeConfig], tunnel_ifindex: int) -> None:
    nmap.update(ctypes.c_uint32(0), NodeConfig(tunnel_ifindex=tunnel_ifindex))
