"""Proxy port allocation: one listening port per (parser, direction), kept in the store.

The pinned policy map names proxy ports in its redirect entries and outlives the
agent; so does a proxy that survives an agent crash. Ports are therefore allocated
once and persisted, and a restarted agent hands out the same port for the same
redirect instead of picking a fresh one that nothing listens on.
"""

from __future__ import annotations

import json
import threading

from ..store import Store

PORTS_KEY = "cilium-py/proxy/ports"
DEFAULT_RANGE = (10000, 19999)


class ProxyPortsExhausted(RuntimeError):
    pass


class ProxyPorts:
    """``allocate("http", "ingress") -> 10000``; the same answer after a restart."""

    def __init__(self, store: Store, port_range: tuple[int, int] = DEFAULT_RANGE) -> None:
        low, high = port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad proxy port range {low}-{high}")
        self.store = store
        self.range = (low, high)
        self._lock = threading.Lock()
        kv = store.get(PORTS_KEY)
        self._ports: dict[str, int] = json.loads(kv.value) if kv is not None else {}

    @staticmethod
    def _name(parser: str, direction: str) -> str:
        return f"{parser}/{direction}"

    def allocate(self, parser: str, direction: str) -> int:
        name = self._name(parser, direction)
        with self._lock:
            port = self._ports.get(name)
            if port is not None and self.range[0] <= port <= self.range[1]:
                return port
            used = set(self._ports.values())
            for candidate in range(self.range[0], self.range[1] + 1):
                if candidate not in used:
                    self._ports[name] = candidate
                    self.store.put(PORTS_KEY, json.dumps(self._ports, sort_keys=True).encode())
                    return candidate
        raise ProxyPortsExhausted(f"no free proxy port in {self.range[0]}-{self.range[1]}")

    def lookup(self, parser: str, direction: str) -> int | None:
        with self._lock:
            return self._ports.get(self._name(parser, direction))

    def all(self) -> dict[str, int]:
        with self._lock:
            return dict(self._ports)
