"""Who is in the cluster and where every endpoint lives, shared through etcd.

Each agent keeps two kinds of keys alive under one lease of its own:

  cilium-py/cluster/nodes/<name>       the node: addresses and endpoint ranges
  cilium-py/cluster/ipcache/<prefix>   one per local endpoint address: identity, node

and watches both prefixes to learn about every other node. A node that dies stops
refreshing its lease and etcd removes its keys when the lease expires: the others see
the deletes and forget it. A graceful stop does NOT revoke the lease either: an agent
restart must be invisible to traffic, and the restarted agent re-binds the same keys to
its new lease well before the old one runs out.

When etcd is unreachable nothing is forgotten: the last known view stays in force (the
datapath keeps enforcing it), the keepalive and the watch retry, and once etcd answers
again the agent re-registers (new lease if the old one expired meanwhile) and
re-reads both prefixes, so changes made during the outage are not missed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ..logs import get_logger
from ..store import KeyValue, StoreError
from ..store.base import Event
from .watch import Coalescer

log = get_logger("node")

NODES_PREFIX = "cilium-py/cluster/nodes/"
IPCACHE_PREFIX = "cilium-py/cluster/ipcache/"
DEFAULT_LEASE_TTL = 15


class LeasedStore(Protocol):
    """What the registry needs of the store: etcd's leases on top of the interface."""

    def get(self, key: str) -> KeyValue | None: ...
    def put(self, key: str, value: bytes, lease: int | None = None) -> int: ...
    def delete(self, key: str) -> bool: ...
    def list(self, prefix: str, limit: int | None = None) -> list[KeyValue]: ...
    def revision(self) -> int: ...
    def watch(self, prefix: str, start_revision: int = 0,
              timeout: float | None = None) -> object: ...
    def grant_lease(self, ttl: int) -> int: ...
    def keepalive(self, lease: int) -> int: ...


@dataclass(frozen=True)
class NodeInfo:
    """One node as the others see it."""

    name: str
    address: str  # where its tunnel and routes point (IPv4 or IPv6)
    ipv4_range: str | None = None
    ipv6_range: str | None = None
    addresses: list[str] = field(default_factory=list)  # every address of the node
    health_ipv4: str | None = None
    health_ipv6: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NodeInfo:
        doc = json.loads(raw)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


@dataclass(frozen=True)
class RemoteEndpoint:
    """An endpoint address on some node, with its identity."""

    prefix: str  # "10.200.1.5/32"
    identity: int
    node: str


def _ipcache_key(prefix: str) -> str:
    return IPCACHE_PREFIX + prefix.replace("/", "_")


ChangeListener = Callable[[], None]


class NodeRegistry:
    """This node's registration plus the cluster view, kept current by a watch."""

    def __init__(
        self,
        store: LeasedStore,
        me: NodeInfo,
        ttl: int = DEFAULT_LEASE_TTL,
        on_change: ChangeListener | None = None,
        retry_seconds: float = 1.0,
        on_register: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.me = me
        self.ttl = ttl
        self.on_change = on_change
        self.on_register = on_register
        self.retry_seconds = retry_seconds
        self.nodes: dict[str, NodeInfo] = {}
        self.endpoints: dict[str, RemoteEndpoint] = {}
        self._local: dict[str, int] = {}  # prefix -> identity, published under our lease
        self._lease: int | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Changes reach the datapath on one thread, a burst of them in one write.
        self._apply_soon = Coalescer("cpy-node-apply", self._changed, delay=0.005)
        self.connected = False
        self.last_error: str | None = None
        self.outages = 0
        self.last_sync: float | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Register and load the cluster view; raises StoreError when etcd is down at
        start (the agent decides whether to carry on with what it restored)."""
        self._register()
        revision = self._resync()
        for name, target in (("cpy-node-keepalive", self._keepalive_loop),
                             ("cpy-node-watch", lambda: self._watch_loop(revision))):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop refreshing and watching. The lease is left to expire on purpose."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._apply_soon.stop()

    # -- what this node publishes --------------------------------------------------------

    def publish(self, entries: dict[str, int]) -> None:
        """Local endpoint prefixes -> identity, added or changed."""
        with self._lock:
            self._local.update(entries)
            lease = self._lease
        for prefix, identity in entries.items():
            self._put_endpoint(prefix, identity, lease)

    def withdraw(self, prefixes: list[str]) -> None:
        with self._lock:
            for prefix in prefixes:
                self._local.pop(prefix, None)
        for prefix in prefixes:
            try:
                self.store.delete(_ipcache_key(prefix))
            except StoreError as exc:
                self._failed(exc)  # the entry goes with our lease if never retried

    def update(self, me: NodeInfo) -> None:
        """Change what this node tells the others about itself."""
        self.me = me
        try:
            self.store.put(NODES_PREFIX + me.name, me.to_json(), lease=self._lease)
        except StoreError as exc:
            self._failed(exc)  # re-registered with the new record on reconnect

    def _put_endpoint(self, prefix: str, identity: int, lease: int | None) -> None:
        doc = {"prefix": prefix, "identity": identity, "node": self.me.name}
        try:
            self.store.put(_ipcache_key(prefix), json.dumps(doc).encode(), lease=lease)
        except StoreError as exc:
            self._failed(exc)  # re-published on reconnect

    def _register(self) -> None:
        lease = self.store.grant_lease(self.ttl)
        self.store.put(NODES_PREFIX + self.me.name, self.me.to_json(), lease=lease)
        with self._lock:
            self._lease = lease
            local = dict(self._local)
        for prefix, identity in local.items():
            self._put_endpoint(prefix, identity, lease)
        if self.on_register is not None:
            self.on_register(lease)  # other keys bound to the lease (identity users)
        self.connected = True
        log.info("node registered", extra={"fields": {"node": self.me.name, "lease": lease}})

    # -- the cluster view --------------------------------------------------------------

    def _resync(self) -> int:
        """Read both prefixes whole; returns the revision the view is current at."""
        revision = self.store.revision()
        nodes = {}
        for kv in self.store.list(NODES_PREFIX):
            info = NodeInfo.from_json(kv.value)
            nodes[info.name] = info
        endpoints = {}
        for kv in self.store.list(IPCACHE_PREFIX):
            doc = json.loads(kv.value)
            endpoints[doc["prefix"]] = RemoteEndpoint(doc["prefix"], int(doc["identity"]),
                                                      doc["node"])
        with self._lock:
            self.nodes, self.endpoints = nodes, endpoints
        self.last_sync = time.time()
        self._changed()
        return revision

    def _apply(self, ev: Event) -> None:
        with self._lock:
            if ev.key.startswith(NODES_PREFIX):
                name = ev.key[len(NODES_PREFIX):]
                if ev.kind == "delete":
                    self.nodes.pop(name, None)
                    log.info("node left", extra={"fields": {"node": name}})
                else:
                    assert ev.value is not None
                    info = NodeInfo.from_json(ev.value)
                    if name not in self.nodes:
                        log.info("node joined", extra={"fields": {"node": name}})
                    self.nodes[name] = info
            elif ev.key.startswith(IPCACHE_PREFIX):
                prefix = ev.key[len(IPCACHE_PREFIX):].replace("_", "/")
                if ev.kind == "delete":
                    self.endpoints.pop(prefix, None)
                else:
                    assert ev.value is not None
                    doc = json.loads(ev.value)
                    self.endpoints[prefix] = RemoteEndpoint(prefix, int(doc["identity"]),
                                                            doc["node"])

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - logged; the datapath writer reports its own
                log.exception("applying the cluster view failed")

    def remote_ipcache(self) -> dict[str, int]:
        """Prefix -> identity of every endpoint on other nodes."""
        with self._lock:
            return {p: e.identity for p, e in self.endpoints.items() if e.node != self.me.name}

    def remote_nodes(self) -> list[NodeInfo]:
        with self._lock:
            return [n for name, n in sorted(self.nodes.items()) if name != self.me.name]

    # -- loops -------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        if self.connected:
            self.outages += 1
            log.warning("cluster store unreachable; enforcing the last known state",
                        extra={"fields": {"error": str(exc)}})
        self.connected = False
        self.last_error = str(exc)

    def _keepalive_loop(self) -> None:
        interval = max(self.ttl / 3.0, 0.5)
        while not self._stop.wait(interval if self.connected else self.retry_seconds):
            try:
                lease = self._lease
                if lease is None or self.store.keepalive(lease) <= 0:
                    # Expired while etcd was away (or never granted): register anew.
                    self._register()
                elif not self.connected:
                    self.connected = True
                    log.info("cluster store reachable again")
            except StoreError as exc:
                self._failed(exc)

    def _watch_loop(self, revision: int) -> None:
        prefix = "cilium-py/cluster/"
        while not self._stop.is_set():
            try:
                for ev in self.store.watch(prefix, revision, timeout=1.0):  # type: ignore[attr-defined]
                    revision = max(revision, ev.revision)
                    if ev.key.startswith((NODES_PREFIX, IPCACHE_PREFIX)):
                        self._apply(ev)
                        self._apply_soon.trigger()
                    if self._stop.is_set():
                        break
                if not self.connected:
                    # Reachable again: re-read whole, in case history was compacted.
                    revision = self._resync()
                    self.connected = True
            except StoreError as exc:
                self._failed(exc)
                self._stop.wait(self.retry_seconds)
                try:
                    revision = self._resync()
                except StoreError:
                    continue

    @property
    def lease(self) -> int | None:
        return self._lease

    def status(self) -> dict[str, object]:
        return {
            "node": self.me.name,
            "connected": self.connected,
            "nodes": sorted(self.nodes),
            "remote-endpoints": len(self.remote_ipcache()),
            "outages": self.outages,
            "last-error": self.last_error,
        }
