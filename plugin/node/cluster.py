"""This agent as one node of a cluster that shares an etcd store.

What changes against a single node (everything else runs unchanged):

- the node claims its own endpoint ranges out of the configured pools (``ranges.py``);
  its endpoints and address allocations stay in the node's own embedded store, which
  etcd being away cannot block (attaching an endpoint whose identity is known works
  through an etcd outage);
- identities and policy live in the shared part, so the same labels have the same
  number on every node and a rule imported anywhere is enforced everywhere (watched
  here, ``watch.py``);
- the node registers itself and its endpoints' addresses under its lease and learns
  every other node's (``registry.py``), which feeds the ipcache (remote endpoints by
  identity, remote nodes as ``remote-node``) and the routes to other nodes: tunnel
  entries for the VXLAN overlay (default) or kernel routes via the other node's
  address (``--tunnel disabled``, direct routing).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute

from ..errors import InvalidInput
from ..labels.reserved import ReservedIdentity
from ..logs import get_logger
from ..store import Store, StoreError
from .ranges import claim_node_range, parse_cluster_range
from .registry import NodeInfo, NodeRegistry
from .tunnel import DEFAULT_TUNNEL_DEVICE, VXLAN_OVERHEAD, ensure_vxlan
from .watch import PrefixWatcher

log = get_logger("node")

LOCAL_RANGE_KEY = "cilium-py/node/range/"
# A route protocol number of our own: the routes to other nodes are found by it (and
# never confused with an administrator's) when they must change.
RTPROT_CILIUM_PY = 0xC7


def is_cluster_store(store: Store) -> bool:
    """Clusters need leases (etcd); the embedded store is one node's."""
    return hasattr(store, "grant_lease")


def default_route_address() -> str | None:
    """The first address of the interface holding the default route (IPv4 first)."""
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_default_routes(family=family):
                oif = route.get_attr("RTA_OIF")
                for msg in ipr.get_addr(family=family, index=oif):
                    addr = msg.get_attr("IFA_ADDRESS")
                    if addr and not addr.startswith("fe80:"):
                        return str(addr)
    return None


def _inside(addr: str, node: NodeInfo) -> bool:
    """Whether ``addr`` lies in one of the node's endpoint ranges (its router address
    does: it is no next hop for reaching the node)."""
    ip = ipaddress.ip_address(addr)
    return any(rng and ip in ipaddress.ip_network(rng)
               for rng in (node.ipv4_range, node.ipv6_range))


def uplink_mtu(address: str, default: int = 1500) -> int:
    """MTU of the interface holding ``address`` (the underlay of the overlay)."""
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            if msg.get_attr("IFA_ADDRESS") == address or msg.get_attr("IFA_LOCAL") == address:
                link = ipr.get_links(msg["index"])[0]
                return int(link.get_attr("IFLA_MTU") or default)
    return default


class ClusterNode:
    """Ranges, registration and the cluster view of one agent."""

    def __init__(self, store: Store, config: Any, local: Store) -> None:
        self.store = store
        self.config = config
        self.name: str = config.node_name or socket.gethostname()
        self.node_store = local
        self.ipv4_range = self._claim(config.ipv4_pool, 4, config.node_ipv4_prefix_len)
        self.ipv6_range = self._claim(config.ipv6_pool, 6, config.node_ipv6_prefix_len)
        self.registry: NodeRegistry | None = None
        self.address: str | None = None
        self.tunnel_ifindex = 0
        self.endpoint_mtu: int | None = None
        self._watchers: list[PrefixWatcher] = []
        self._datapath: Any = None
        self._lock = threading.Lock()
        self._routes: set[str] = set()

    def _claim(self, pool: str | None, family: int, plen: int) -> str | None:
        """The node's range: claimed in etcd, remembered locally so that a restart
        while etcd is away keeps it (the claim in etcd outlives the node anyway)."""
        if not pool:
            return None
        cluster = parse_cluster_range(pool, family, plen)
        cache_key = f"{LOCAL_RANGE_KEY}ipv{family}"
        try:
            rng = str(claim_node_range(self.store, self.name, cluster, plen))
        except StoreError:
            cached = self.node_store.get(cache_key)
            if cached is None:
                raise
            log.warning("cluster store unreachable: using the range this node held",
                        extra={"fields": {"range": cached.value.decode()}})
            return cached.value.decode()
        self.node_store.put(cache_key, rng.encode())
        return rng

    # -- start/stop --------------------------------------------------------------------

    def start(
        self,
        datapath: Any,
        sync_ipcache: Callable[[], None],
        on_identities: Callable[[], None],
        on_policy: Callable[[], None],
        on_register: Callable[[int], None],
        node_addresses: list[str],
    ) -> None:
        """Register, join the view, set up the overlay and follow the shared keys."""
        self._datapath = datapath
        self._sync_ipcache = sync_ipcache
        self.address = self.config.node_address or default_route_address()
        if not self.address:
            raise InvalidInput("no --node-address given and no default route to take "
                               "one from", {"node-address": "required in cluster mode"})
        try:
            ipaddress.ip_address(self.address)
        except ValueError as exc:
            raise InvalidInput(f"invalid --node-address {self.address!r}",
                               {"node-address": str(exc)}) from exc
        if datapath is not None:
            if self.config.tunnel == "vxlan":
                self.tunnel_ifindex = ensure_vxlan(DEFAULT_TUNNEL_DEVICE)
                # Encapsulated packets must fit the underlay: endpoints get its MTU less
                # the VXLAN overhead, so TCP picks segments that never fragment.
                self.endpoint_mtu = uplink_mtu(self.address) - VXLAN_OVERHEAD
            datapath.attach_overlay(self.tunnel_ifindex)
        me = NodeInfo(name=self.name, address=self.address, ipv4_range=self.ipv4_range,
                      ipv6_range=self.ipv6_range,
                      addresses=sorted({a.split("/")[0] for a in node_addresses}))
        self.registry = NodeRegistry(self.store, me, ttl=self.config.node_lease_ttl,  # type: ignore[arg-type]
                                     on_change=self._view_changed, on_register=on_register)
        revision = self.store.revision()
        self.registry.start()
        for prefix, handler in (("cilium-py/identities/", on_identities),
                                ("cilium-py/policy/", on_policy)):
            watcher = PrefixWatcher(self.store, prefix, handler)
            watcher.start(revision)
            self._watchers.append(watcher)
        log.info("joined the cluster", extra={"fields": {
            "node": self.name, "address": self.address, "ipv4-range": self.ipv4_range,
            "ipv6-range": self.ipv6_range,
            "mode": "tunnel" if self.tunnel_ifindex else "direct-routing"}})

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        if self.registry is not None:
            self.registry.stop()

    def set_health_addresses(self, addresses: dict[str, str | None]) -> None:
        """Tell the other nodes where this node's health endpoint is."""
        if self.registry is None:
            return
        me = self.registry.me
        self.registry.update(NodeInfo(
            name=me.name, address=me.address, ipv4_range=me.ipv4_range,
            ipv6_range=me.ipv6_range, addresses=me.addresses,
            health_ipv4=addresses.get("ipv4"), health_ipv6=addresses.get("ipv6")))

    @property
    def lease(self) -> int | None:
        return self.registry.lease if self.registry else None

    # -- what this node publishes ------------------------------------------------------

    def publish(self, entries: dict[str, int]) -> None:
        if self.registry is not None and entries:
            self.registry.publish(entries)

    def withdraw(self, prefixes: list[str]) -> None:
        if self.registry is not None and prefixes:
            self.registry.withdraw(prefixes)

    # -- the view, applied -------------------------------------------------------------

    def ipcache(self) -> dict[str, int]:
        """Remote endpoints by identity, remote nodes' addresses as remote-node."""
        if self.registry is None:
            return {}
        out = self.registry.remote_ipcache()
        for node in self.registry.remote_nodes():
            for addr in {node.address, *node.addresses}:
                plen = 32 if ipaddress.ip_address(addr).version == 4 else 128
                out.setdefault(f"{addr}/{plen}", int(ReservedIdentity.REMOTE_NODE))
        return out

    def _view_changed(self) -> None:
        with self._lock:
            self._sync_ipcache()
            tunnel, routes = {}, {}
            for node in self.registry.remote_nodes() if self.registry else []:
                for family, rng in ((4, node.ipv4_range), (6, node.ipv6_range)):
                    if not rng:
                        continue
                    tunnel[rng] = node.address
                    # Direct routing needs a next hop of the range's own family.
                    via = next((a for a in [node.address, *node.addresses]
                                if ipaddress.ip_address(a).version == family
                                and not _inside(a, node)), None)
                    if via:
                        routes[rng] = via
            if self._datapath is None:
                return
            if self.tunnel_ifindex:
                self._datapath.set_tunnel_routes(tunnel)
            else:
                self._sync_routes(routes)

    def _sync_routes(self, ranges: dict[str, str]) -> None:
        """Direct routing: one kernel route per remote range, via its node."""
        wanted = dict(ranges)
        with IPRoute() as ipr:
            for rng, via in wanted.items():
                ipr.route("replace", dst=rng, gateway=via, proto=RTPROT_CILIUM_PY)
            for rng in self._routes - set(wanted):
                try:
                    ipr.route("del", dst=rng, proto=RTPROT_CILIUM_PY)
                except Exception:  # noqa: BLE001 - already gone is fine
                    log.debug("route to %s already gone", rng)
        self._routes = set(wanted)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "node": self.name, "address": self.address,
            "ipv4-range": self.ipv4_range, "ipv6-range": self.ipv6_range,
            "mode": "tunnel" if self.tunnel_ifindex else "direct-routing",
        }
        if self.registry is not None:
            doc.update(self.registry.status())
            doc["nodes"] = [
                {"name": n.name, "address": n.address, "ipv4-range": n.ipv4_range,
                 "ipv6-range": n.ipv6_range}
                for n in sorted(self.registry.nodes.values(), key=lambda n: n.name)
            ]
        return doc
