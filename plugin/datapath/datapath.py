"""The endpoint datapath facade the agent uses.

Lifecycle::

    dp = Datapath("/sys/fs/bpf/cilium-py", ipv4=True, ipv6=True, ct_size=65536)
    dp.start()                  # compile bpf/bpf_lxc.c ONCE, open/create pinned maps, load
    dp.attach_endpoint(info)    # map writes + tc attach on the host veth; never compiles
    dp.detach_endpoint(info)    # detach (if the device exists) + remove entries; idempotent
    dp.endpoint_entries()       # rows for `cilium-py bpf endpoint list`
    dp.ct_entries()             # rows for `cilium-py bpf ct list`
    dp.drop_counters()          # {"invalid-source-mac": n, ...} for every reason
    dp.metrics()                # forwarding counters (local delivery vs host stack)
    dp.flush_orphans(keep)      # drop entries of host veths no endpoint owns any more
    dp.set_policy(ep, resolved) # write the diff of the endpoint's policy entries + flags
    dp.policy_entries(ep)       # rows for `cilium-py bpf policy get`
    dp.set_ipcache({prefix: identity})  # full desired ipcache; writes the diff
    dp.ipcache_entries()        # rows for `cilium-py bpf ipcache list`
    dp.subscribe_drops(cb)      # cb(dict) on a reader thread, one call per dropped packet
    dp.set_service(id, fe, bes) # balance a frontend over backends (lb.py, bpf/lib/lb.h)
    dp.lb_entries()             # rows for `cilium-py bpf lb list`
    dp.set_trace_events(bits)   # trace / policy-verdict events on or off (bpf/lib/trace.h)
    dp.attach_socket_lb(cgroup) # balance the node's own sockets (socklb.py, bpf/bpf_sock.c)
    dp.close()                  # release fds; programs stay attached, maps stay pinned
    dp.purge()                  # close + unpin every map (full teardown, tests)

What outlives the agent: the programs attached to the host veths (tc holds
them) and the pinned maps under ``bpf_root`` (cpy_lxc, cpy_ep_cfg, cpy_ct4,
cpy_ct6, cpy_frag, cpy_metrics, cpy_drops, cpy_ipcache, cpy_policy, cpy_tunnel,
cpy_node, cpy_lb_*), and the socket-LB links pinned there (cpy_sock_*,
which keep the socket programs on their cgroup). Traffic keeps
flowing, and policy stays enforced, while no agent runs.
After a restart, ``start()`` compiles again and bcc reuses the pins; the agent
then calls ``attach_endpoint`` for every endpoint it restores, which rewrites
the same entries and atomically replaces each filter with the new program.
Only the perf event array is per compile (events while no agent runs are lost
by nature).

Everything runs in the calling thread's network namespace: the agent (or a
test) must already be in the node namespace. The methods are thread-safe.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute

from ..netlink.nlbatch import RtnlSocket
from . import attach, bpfsys, trace_events
from .conntrack import ct_row
from .endpoint import EndpointDatapathInfo, numeric_endpoint_id
from .events import DropEventReader
from .lb import (
    LB_AFFINITY,
    LB_BACKEND,
    LB_CONN,
    LB_REV,
    LB_SOCK_CFG,
    LB_SVC,
    LbBackendSpec,
    LbFrontend,
    LbTable,
)
from .loader import DatapathError, DatapathOptions, LoadedPrograms, compile_and_load
from .maps import (
    AF_INET,
    AF_INET6,
    CT4,
    CT6,
    CT_F_FROM_PROXY,
    CT_F_PROXY_REDIRECT,
    DROP_REASON_MAX,
    DROPS,
    EP_CFG,
    EP_F_HAS_IPV4,
    EP_F_HAS_IPV6,
    EP_POLICY_FLAGS_MASK,
    IPCACHE,
    LXC,
    METRICS,
    NODE,
    POLICY,
    TUNNEL,
    DropReason,
    EndpointInfo,
    EndpointKey,
    EpConfig,
    Metric,
    MetricValue,
    PinnedMap,
    addr_str,
    endpoint_key,
    link_local_from_mac,
    mac_bytes,
    mac_str,
    ntohs,
)
from .overlay import TunnelTable, set_node_config
from .policy import flags_dict, resolved_entries, resolved_flags
from .socklb import SocketLB, netns_cookie
from .tables import IpcacheTable, PolicyTable

log = logging.getLogger("cilium_py.datapath")

__all__ = ["Datapath", "DatapathError", "EndpointDatapathInfo", "numeric_endpoint_id"]


class Datapath:
    """Compile-once endpoint datapath: pinned maps + programs on host veths."""

    def __init__(
        self,
        bpf_root: str,
        *,
        ipv4: bool = True,
        ipv6: bool = True,
        ct_size: int = 65536,
        endpoint_size: int = 4096,
        ct_lifetime_tcp: int = 21600,
        ct_lifetime_syn: int = 60,
        ct_lifetime_nontcp: int = 60,
        ct_lifetime_close: int = 10,
        ipcache_size: int = 16384,
        policy_size: int = 65536,
        ct_accounting: bool = True,
    ) -> None:
        self.options = DatapathOptions(
            bpf_root=bpf_root.rstrip("/") or "/",
            ipv4=ipv4,
            ipv6=ipv6,
            ct_size=ct_size,
            endpoint_size=endpoint_size,
            ct_lifetime_tcp=ct_lifetime_tcp,
            ct_lifetime_syn=ct_lifetime_syn,
            ct_lifetime_nontcp=ct_lifetime_nontcp,
            ct_lifetime_close=ct_lifetime_close,
            ipcache_size=ipcache_size,
            policy_size=policy_size,
            ct_accounting=ct_accounting,
        )
        self._lock = threading.RLock()
        self._loaded: LoadedPrograms | None = None
        self._events: DropEventReader | None = None
        self._maps: dict[str, PinnedMap[Any, Any]] = {}
        self._policy: PolicyTable | None = None
        self._ipcache: IpcacheTable | None = None
        self._tunnel: TunnelTable | None = None
        self._lbt: LbTable | None = None
        self._socket_lb = SocketLB(self.options.bpf_root)
        self._socket_lb_cgroup: str | None = None
        # Policy part of each endpoint's flags word, by endpoint id: survives a
        # re-attach, which rewrites the endpoint's config entries.
        self._policy_flags: dict[int, int] = {}

    # -- lifecycle ------------------------------------------------------------

    @property
    def bpf_root(self) -> str:
        return self.options.bpf_root

    @property
    def started(self) -> bool:
        return self._loaded is not None

    @property
    def prog_ids(self) -> dict[str, int]:
        """Kernel ids of the loaded programs (what tc shows once attached)."""
        return dict(self._loaded.prog_ids) if self._loaded else {}

    @property
    def compile_seconds(self) -> float:
        return self._loaded.compile_seconds if self._loaded else 0.0

    def start(self) -> None:
        """Compile once, reuse or create the pinned maps, load the programs."""
        with self._lock:
            if self._loaded is not None:
                return
            self._loaded = compile_and_load(self.options)
            self._close_maps()  # a replaced pin must be reopened

    def close(self) -> None:
        """Stop the event reader and release fds. Programs stay attached and maps
        pinned: they must outlive the agent."""
        with self._lock:
            if self._events is not None:
                self._events.stop()
                self._events = None
            self._close_maps()
            if self._loaded is not None:
                self._loaded.close()
                self._loaded = None

    def purge(self) -> None:
        """close(), detach socket LB and unpin every map of this datapath (full
        teardown)."""
        with self._lock:
            self.close()
            self._socket_lb.detach()
            for name in self.options.specs():
                path = os.path.join(self.bpf_root, name)
                if os.path.exists(path):
                    os.unlink(path)
            try:
                os.rmdir(self.bpf_root)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise

    def __enter__(self) -> Datapath:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- maps -----------------------------------------------------------------

    def _map(self, name: str) -> PinnedMap[Any, Any]:
        m = self._maps.get(name)
        if m is None:
            spec = self.options.specs()[name]
            path = os.path.join(self.bpf_root, name)
            try:
                m = PinnedMap(path, spec.key, spec.value)
            except bpfsys.BpfError as exc:
                raise DatapathError(f"cannot open pinned map {path}: {exc}") from exc
            self._maps[name] = m
        return m

    def map_ids(self) -> dict[str, int]:
        """Kernel ids of the pinned maps: equal ids across restarts prove reuse."""
        with self._lock:
            return {name: self._map(name).info.id for name in self.options.specs()}

    def _close_maps(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()
        self._policy = None
        self._ipcache = None
        self._tunnel = None
        self._lbt = None

    # -- endpoints ------------------------------------------------------------

    def attach_endpoint(self, ep: Any) -> None:
        """Write the endpoint's entries, then attach both programs to its host veth.

        Idempotent, and the way to move a restored endpoint onto freshly loaded
        programs: filters are replaced in place, so traffic never runs unfiltered.
        """
        info = EndpointDatapathInfo.from_endpoint(ep)
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            if info.ifindex <= 0:
                raise DatapathError(f"endpoint {info.endpoint_id}: no host ifindex")
            cfg, lxc_entries = self._entries_for(info)
            self._drop_stale_lxc(info)
            self._map(EP_CFG).update(ctypes.c_uint32(info.ifindex), cfg)
            for key, value in lxc_entries:
                self._map(LXC).update(key, value)
            try:
                with RtnlSocket() as sock:
                    attach.attach_programs(sock, info.ifindex, {
                        "ingress": (self._loaded.fds["from_container"], "from_container"),
                        "egress": (self._loaded.fds["to_container"], "to_container")})
            except Exception as exc:
                self._remove_entries(info)
                raise DatapathError(
                    f"attaching endpoint {info.endpoint_id} to ifindex {info.ifindex}: {exc}"
                ) from exc
            log.debug("attached endpoint %d on ifindex %d", info.endpoint_id, info.ifindex)

    def detach_endpoint(self, ep: Any, *, programs: bool = True) -> None:
        """Detach the programs (when the device still exists), then remove the
        endpoint's map and conntrack entries. Safe to repeat. ``programs=False``
        leaves the tc filters for the caller that deletes the veth anyway (they go
        with it), saving two netlink round trips per endpoint delete."""
        info = EndpointDatapathInfo.from_endpoint(ep)
        with self._lock:
            if programs and info.ifindex > 0:
                with IPRoute() as ipr:
                    for direction in ("ingress", "egress"):
                        attach.detach_program(ipr, info.ifindex, direction)
            self._remove_entries(info)
            self._policy_table().remove(info.endpoint_id)
            self._policy_flags.pop(info.endpoint_id, None)
            self.flush_ct(info.addresses())

    def attachment(self, ifindex: int) -> dict[str, int | None]:
        """Program ids attached to ``ifindex`` by us, per hook (None: nothing)."""
        out: dict[str, int | None] = {"ingress": None, "egress": None}
        with IPRoute() as ipr:
            for direction in ("ingress", "egress"):
                for f in attach.list_filters(ipr, ifindex, direction):
                    if (f.prio, f.handle) == (attach.DEFAULT_PRIO, attach.DEFAULT_HANDLE):
                        out[direction] = f.prog_id
        return out

    def _entries_for(
        self, info: EndpointDatapathInfo
    ) -> tuple[EpConfig, list[tuple[EndpointKey, EndpointInfo]]]:
        try:
            mac, host_mac = mac_bytes(info.mac), mac_bytes(info.host_mac)
            v4 = ipaddress.IPv4Address(info.ipv4) if info.ipv4 else None
            v6 = ipaddress.IPv6Address(info.ipv6) if info.ipv6 else None
            ll = ipaddress.IPv6Address(info.ipv6_link_local or link_local_from_mac(info.mac))
        except ValueError as exc:
            raise DatapathError(f"endpoint {info.endpoint_id}: {exc}") from exc
        flags = (EP_F_HAS_IPV4 if v4 else 0) | (EP_F_HAS_IPV6 if v6 else 0)
        flags |= self._policy_flags_for(info)
        cfg = EpConfig(ep_id=info.endpoint_id, identity=info.identity, flags=flags)
        if v4:
            ctypes.memmove(cfg.ipv4, v4.packed, 4)
        if v6:
            ctypes.memmove(cfg.ipv6, v6.packed, 16)
        ctypes.memmove(cfg.ipv6_ll, ll.packed, 16)
        ctypes.memmove(cfg.mac, mac, 6)
        ctypes.memmove(cfg.node_mac, host_mac, 6)
        entries = []
        for addr in info.addresses():
            value = EndpointInfo(ifindex=info.ifindex, ep_id=info.endpoint_id,
                                 identity=info.identity, flags=flags)
            ctypes.memmove(value.mac, mac, 6)
            ctypes.memmove(value.node_mac, host_mac, 6)
            entries.append((endpoint_key(addr), value))
        return cfg, entries

    def _policy_flags_for(self, info: EndpointDatapathInfo) -> int:
        """The policy flags to attach with: the last ``set_policy``'s, else what a
        previous agent left in the endpoint's config (restart), else none."""
        if info.endpoint_id in self._policy_flags:
            return self._policy_flags[info.endpoint_id]
        current = self._map(EP_CFG).lookup(ctypes.c_uint32(info.ifindex))
        if current is not None and current.ep_id == info.endpoint_id:
            return int(current.flags) & EP_POLICY_FLAGS_MASK
        return 0

    def _configured_addresses(self, ifindex: int) -> list[str]:
        """The addresses the config entry of this veth names (what an earlier attach
        wrote), read with one lookup instead of a scan of the endpoint map."""
        if ifindex <= 0:
            return []
        cfg = self._map(EP_CFG).lookup(ctypes.c_uint32(ifindex))
        if cfg is None:
            return []
        out = []
        if cfg.flags & EP_F_HAS_IPV4:
            out.append(addr_str(cfg.ipv4, AF_INET))
        if cfg.flags & EP_F_HAS_IPV6:
            out.append(addr_str(cfg.ipv6, AF_INET6))
        return out

    def _drop_stale_lxc(self, info: EndpointDatapathInfo) -> None:
        """Re-attach with other addresses: forget the ones this veth no longer has."""
        wanted = set(info.addresses())
        lxc = self._map(LXC)
        for addr in self._configured_addresses(info.ifindex):
            if addr in wanted:
                continue
            key = endpoint_key(addr)
            current = lxc.lookup(key)
            if current is not None and current.ifindex == info.ifindex:
                lxc.delete(key)

    def _remove_entries(self, info: EndpointDatapathInfo) -> None:
        lxc = self._map(LXC)
        for addr in info.addresses():
            key = endpoint_key(addr)
            current = lxc.lookup(key)
            # An address may already belong to a newer endpoint: only remove ours.
            if current is not None and (info.ifindex <= 0 or current.ifindex == info.ifindex):
                lxc.delete(key)
        if info.ifindex > 0:
            for addr in self._configured_addresses(info.ifindex):
                key = endpoint_key(addr)
                current = lxc.lookup(key)
                if current is not None and current.ifindex == info.ifindex:
                    lxc.delete(key)
            self._map(EP_CFG).delete(ctypes.c_uint32(info.ifindex))

    def flush_orphans(self, keep_ifindexes: set[int]) -> int:
        """Remove endpoint entries of host veths not in ``keep_ifindexes``; return
        how many entries went. For the agent after restoring its endpoints."""
        removed = 0
        with self._lock:
            lxc, cfg = self._map(LXC), self._map(EP_CFG)
            for key, value in list(lxc.items()):
                if value.ifindex not in keep_ifindexes:
                    removed += lxc.delete(key)
            for key in list(cfg.keys()):
                if key.value not in keep_ifindexes:
                    removed += cfg.delete(key)
            live = {int(v.ep_id) for _, v in cfg.items()}
            table = self._policy_table()
            for ep_id in table.endpoint_ids() - live:
                removed += table.remove(ep_id)
                self._policy_flags.pop(ep_id, None)
        return removed

    def endpoint_entries(self) -> list[dict[str, Any]]:
        """One row per local endpoint address (cpy_lxc), joined with its config."""
        with self._lock:
            configs = {k.value: v for k, v in self._map(EP_CFG).items()}
            rows = []
            for key, value in self._map(LXC).items():
                rows.append({
                    "address": addr_str(key.addr, key.family),
                    "family": "ipv4" if key.family == AF_INET else "ipv6",
                    "endpoint_id": int(value.ep_id),
                    "identity": int(value.identity),
                    "ifindex": int(value.ifindex),
                    "mac": mac_str(value.mac),
                    "host_mac": mac_str(value.node_mac),
                    "configured": value.ifindex in configs,
                })
        rows.sort(key=lambda r: (r["endpoint_id"], r["family"], r["address"]))
        return rows

    def endpoint_configs(self) -> dict[int, dict[str, Any]]:
        """cpy_ep_cfg by host ifindex: what source validation checks against."""
        with self._lock:
            out = {}
            for key, v in self._map(EP_CFG).items():
                out[int(key.value)] = {
                    "endpoint_id": int(v.ep_id),
                    "identity": int(v.identity),
                    "ipv4": addr_str(v.ipv4, AF_INET) if v.flags & EP_F_HAS_IPV4 else None,
                    "ipv6": addr_str(v.ipv6, AF_INET6) if v.flags & EP_F_HAS_IPV6 else None,
                    "ipv6_link_local": addr_str(v.ipv6_ll, AF_INET6),
                    "mac": mac_str(v.mac),
                    "host_mac": mac_str(v.node_mac),
                    "policy": flags_dict(int(v.flags)),
                }
            return out

    # -- policy and ipcache ---------------------------------------------------

    def _policy_table(self) -> PolicyTable:
        if self._policy is None:
            self._policy = PolicyTable(self._map(POLICY))
        return self._policy

    def _ipcache_table(self) -> IpcacheTable:
        if self._ipcache is None:
            self._ipcache = IpcacheTable(self._map(IPCACHE))
        return self._ipcache

    def set_policy(self, ep: Any, resolved: Any) -> dict[str, Any]:
        """Enforce ``resolved`` (a ``ResolvedPolicy``) for endpoint ``ep``.

        Writes exactly the entries that differ from what the map holds for the
        endpoint (one map update per changed entry, never a compile) and the
        endpoint's flags word (enforced directions, key shapes in use). Works
        before the endpoint is attached too: the flags are then applied by
        ``attach_endpoint``. Returns counts: added, changed, removed, flags_changed.
        """
        info = EndpointDatapathInfo.from_endpoint(ep)
        try:
            entries = resolved_entries(resolved)
        except (KeyError, ValueError) as exc:
            raise DatapathError(f"endpoint {info.endpoint_id}: bad policy entry: {exc}") from exc
        flags = resolved_flags(resolved, entries)
        changed_flags: list[bool] = []
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            result: dict[str, Any] = self._policy_table().sync(
                info.endpoint_id, entries,
                between=lambda: changed_flags.append(self._write_policy_flags(info, flags)),
            )
        result["flags_changed"] = bool(changed_flags and changed_flags[0])
        return result

    def _write_policy_flags(self, info: EndpointDatapathInfo, flags: int) -> bool:
        """Put ``flags`` into the endpoint's config and address entries; True when
        any map entry changed."""
        self._policy_flags[info.endpoint_id] = flags
        changed = False
        cfg_map, lxc = self._map(EP_CFG), self._map(LXC)
        key = ctypes.c_uint32(info.ifindex)
        cfg = cfg_map.lookup(key) if info.ifindex > 0 else None
        if cfg is not None and cfg.ep_id == info.endpoint_id:
            new = (int(cfg.flags) & ~EP_POLICY_FLAGS_MASK) | flags
            if new != cfg.flags:
                cfg.flags = new
                cfg_map.update(key, cfg)
                changed = True
        for addr in info.addresses():
            lkey = endpoint_key(addr)
            value = lxc.lookup(lkey)
            if value is None or value.ifindex != info.ifindex:
                continue
            new = (int(value.flags) & ~EP_POLICY_FLAGS_MASK) | flags
            if new != value.flags:
                value.flags = new
                lxc.update(lkey, value)
                changed = True
        return changed

    def policy_entries(self, ep: Any) -> list[dict[str, Any]]:
        """The endpoint's policy entries as the kernel holds them, sorted:
        {direction, identity, port, protocol, action, proxy_port}."""
        info = EndpointDatapathInfo.from_endpoint(ep)
        with self._lock:
            return [e.to_dict() for e in self._policy_table().read(info.endpoint_id)]

    def policy_map_endpoints(self) -> dict[int, int]:
        """Entries per endpoint id as found by walking the kernel's cpy_policy
        (not the writer's cache): for checks and debugging."""
        counts: dict[int, int] = {}
        with self._lock:
            for key in self._map(POLICY).keys():
                counts[int(key.ep_id)] = counts.get(int(key.ep_id), 0) + 1
        return counts

    def policy_writes(self) -> dict[str, int]:
        """Map operations issued on cpy_policy and cpy_ipcache since start()."""
        with self._lock:
            policy, ipcache = self._policy_table(), self._ipcache_table()
            return {"policy_updates": policy.updates, "policy_deletes": policy.deletes,
                    "ipcache_updates": ipcache.updates, "ipcache_deletes": ipcache.deletes}

    def set_ipcache(self, mapping: dict[str, int]) -> dict[str, int]:
        """Make the ipcache hold exactly ``mapping`` (address or prefix -> identity):
        one map update per new or changed entry, one delete per entry no longer
        wanted. Returns counts: added, changed, removed."""
        with self._lock:
            return self._ipcache_table().sync(mapping)

    def update_ipcache(self, upsert: dict[str, int], remove: list[str]) -> dict[str, int]:
        """Add or change ``upsert`` and delete ``remove``, leaving the rest alone."""
        with self._lock:
            return self._ipcache_table().update(upsert, remove)

    def ipcache_entries(self) -> list[dict[str, Any]]:
        """Every ipcache entry as {prefix, identity}."""
        with self._lock:
            return self._ipcache_table().rows()

    # -- overlay --------------------------------------------------------------

    def set_tunnel_routes(self, ranges: dict[str, str]) -> dict[str, int]:
        """Remote endpoint ranges -> their node's address (the full desired set)."""
        with self._lock:
            if self._tunnel is None:
                self._tunnel = TunnelTable(self._map(TUNNEL))
            return self._tunnel.sync(ranges)

    def tunnel_entries(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._tunnel is None:
                self._tunnel = TunnelTable(self._map(TUNNEL))
            return self._tunnel.rows()

    def attach_overlay(self, ifindex: int) -> None:
        """Put ``from_overlay`` on the tunnel device's tc ingress and point the
        endpoint programs at it; 0 turns the overlay off (direct routing)."""
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            if ifindex:
                with RtnlSocket() as sock:
                    attach.attach_programs(sock, ifindex, {
                        "ingress": (self._loaded.fds["from_overlay"], "from_overlay")})
            set_node_config(self._map(NODE), ifindex)

    # -- conntrack ------------------------------------------------------------

    def ct_entries(self) -> list[dict[str, Any]]:
        """Every conntrack entry, both families, JSON-ready."""
        now = int(time.monotonic())
        rows: list[dict[str, Any]] = []
        with self._lock:
            for name, family in ((CT4, AF_INET), (CT6, AF_INET6)):
                for key, e in self._map(name).items():
                    rows.append(ct_row(key, e, family, now))
        return rows

    def flush_ct(self, addresses: list[str] | None = None) -> int:
        """Delete conntrack entries touching any of ``addresses`` (all when None);
        returns how many went. Established TCP connections among them are cut: only a
        SYN creates an entry, so their next packets are dropped (ct-missing-syn)."""
        wanted = None if addresses is None else {
            ipaddress.ip_address(a).packed for a in addresses
        }
        removed = 0
        with self._lock:
            for name, size in ((CT4, 4), (CT6, 16)):
                ct = self._map(name)
                for key in list(ct.keys()):
                    if wanted is None or bytes(key.saddr)[:size] in wanted or \
                            bytes(key.daddr)[:size] in wanted:
                        removed += ct.delete(key)
        return removed

    def flush_ct_ports(self, addresses: list[str], ports: list[tuple[str, int]]) -> int:
        """Delete the conntrack entries of connections to (``ingress``) or from
        (``egress``) ``addresses`` on the given destination ports (0: any) that are
        neither redirected to a proxy nor opened by one: what a new L7 redirect must
        not let bypass it.
        The next packet of such a connection is then no SYN of any tracked
        connection and is dropped (ct-missing-syn): the client reconnects, through
        the proxy."""
        own = {ipaddress.ip_address(a).packed for a in addresses}
        removed = 0
        with self._lock:
            for name, size in ((CT4, 4), (CT6, 16)):
                ct = self._map(name)
                for key, e in list(ct.items()):
                    # Through the proxy already, or the proxy's own upstream
                    # connection (kept alive in its pool: cutting it would only
                    # stall the proxy's next request on it).
                    if e.flags & (CT_F_PROXY_REDIRECT | CT_F_FROM_PROXY):
                        continue
                    dport = ntohs(key.dport)
                    for direction, port in ports:
                        addr = key.daddr if direction == "ingress" else key.saddr
                        if bytes(addr)[:size] in own and port in (0, dport):
                            removed += ct.delete(key)
                            break
        return removed

    def gc_ct(self) -> int:
        """Delete expired conntrack entries and return how many (the programs never
        delete: an expired entry only stops matching, and the LRU evicts when full,
        so without this pass a closed connection's entry holds its slot until then)."""
        now = int(time.monotonic())
        removed = 0
        with self._lock:
            for name in (CT4, CT6):
                ct = self._map(name)
                for key, e in list(ct.items()):
                    if e.expires < now:
                        removed += ct.delete(key)
        return removed

    # -- load balancing (bpf/lib/lb.h, lb.py) -----------------------------------

    def _lb(self) -> LbTable:
        if self._lbt is None:
            self._lbt = LbTable(*(self._map(n) for n in (LB_SVC, LB_BACKEND, LB_CONN, LB_REV,
                                                          LB_AFFINITY)))
        return self._lbt

    def set_service(self, svc_id: int, frontend: LbFrontend, backends: list[LbBackendSpec],
                    affinity_timeout: int = 0,
                    old_frontend: LbFrontend | None = None) -> dict[str, int]:
        """Balance ``frontend`` over ``backends`` (replaces what the service had)."""
        with self._lock:
            return self._lb().set_service(svc_id, frontend, backends, affinity_timeout,
                                          old_frontend)

    def delete_service(self, svc_id: int, frontend: LbFrontend) -> None:
        with self._lock:
            self._lb().delete_service(svc_id, frontend)

    def flush_services(self, keep: dict[int, LbFrontend]) -> int:
        """Remove frontends and backends no service in ``keep`` (id -> frontend) owns."""
        with self._lock:
            return self._lb().delete_unknown(keep)

    def lb_entries(self) -> list[dict[str, Any]]:
        """Rows for ``cilium-py bpf lb list``: frontends and their backend slots."""
        with self._lock:
            return self._lb().rows()

    def lb_connections(self) -> list[dict[str, Any]]:
        """Balanced connections (cpy_lb_conn): client, frontend, chosen backend."""
        with self._lock:
            return list(self._lb().connections())

    # -- socket-level load balancing (socklb.py, bpf/bpf_sock.c) ----------------

    def attach_socket_lb(self, cgroup: str) -> dict[str, Any]:
        """Balance the sockets of this network namespace's processes in ``cgroup``
        (a cgroup v2 directory) at connect/sendmsg; replaces a previous agent's
        programs in place."""
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            result = self._socket_lb.attach(self._loaded.bpf, cgroup, netns_cookie(),
                                            self._map(LB_SOCK_CFG))
            self._socket_lb_cgroup = cgroup
            return result

    def detach_socket_lb(self) -> int:
        """Detach the socket programs (wherever a previous agent attached them)."""
        with self._lock:
            self._socket_lb_cgroup = None
            return self._socket_lb.detach()

    def socket_lb_status(self) -> dict[str, Any]:
        """Where socket LB is attached (this agent's cgroup) and each hook's link."""
        with self._lock:
            return {"cgroup": self._socket_lb_cgroup, "hooks": self._socket_lb.status()}

    # -- counters and events --------------------------------------------------

    def _percpu_sums(self, name: str, slots: int) -> dict[int, tuple[int, int]]:
        m = self._map(name)
        out = {}
        for slot in range(slots):
            values: list[MetricValue] | None = m.lookup_percpu(ctypes.c_uint32(slot))
            if values:
                out[slot] = (sum(v.packets for v in values), sum(v.bytes for v in values))
        return out

    def drop_counters(self) -> dict[str, int]:
        """Dropped packets per reason label (both directions), every known reason."""
        out: dict[str, int] = {r.label: 0 for r in DropReason}
        for row in self.drop_counters_detail():
            out[row["reason"]] = out.get(row["reason"], 0) + row["packets"]
        return out

    def drop_counters_detail(self) -> list[dict[str, Any]]:
        """Packets and bytes dropped per direction and reason (the map's slots are
        reason + direction * DROP_REASON_MAX, bpf/lib/drop.h)."""
        with self._lock:
            sums = self._percpu_sums(DROPS, 2 * DROP_REASON_MAX)
        rows = []
        for d, direction in ((0, "egress"), (1, "ingress")):
            for slot in range(DROP_REASON_MAX):
                packets, nbytes = sums.get(slot + d * DROP_REASON_MAX, (0, 0))
                known = slot in DropReason._value2member_map_
                if not known and not packets:
                    continue
                label = DropReason(slot).label if known else f"reason-{slot}"
                rows.append({"direction": direction, "reason": label, "packets": packets,
                             "bytes": nbytes})
        return rows

    def metrics(self) -> dict[str, dict[str, int]]:
        """Forwarding counters: packets/bytes per path (see bpf/lib/metrics.h)."""
        with self._lock:
            sums = self._percpu_sums(METRICS, max(Metric) + 1)
        return {m.label: {"packets": sums.get(int(m), (0, 0))[0],
                          "bytes": sums.get(int(m), (0, 0))[1]} for m in Metric}

    def prog_stats(self) -> dict[str, dict[str, int]]:
        """Run count and run time per program (zero unless BPF statistics are on,
        see ``bpfsys.enable_stats``): the datapath's own per-packet cost."""
        with self._lock:
            if self._loaded is None:
                return {}
            out = {}
            for name, fd in self._loaded.fds.items():
                st = bpfsys.prog_stats(fd)
                out[name] = {"run_cnt": st.run_cnt, "run_time_ns": st.run_time_ns}
            return out

    def subscribe_drops(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event_dict)`` for every drop, on a background thread."""
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            if self._events is None:
                self._events = DropEventReader(self._loaded.bpf)
            self._events.subscribe(callback)

    def set_trace_events(self, bits: int) -> None:
        """Turn the datapath's trace/policy-verdict events on or off (``trace_events.
        gate_bits``): while a bit is clear those events cost one array lookup."""
        with self._lock:
            if self._loaded is None:
                raise DatapathError("datapath not started")
            table = self._loaded.bpf[trace_events.GATE_MAP]
            table[table.Key(0)] = table.Leaf(bits)

    def trace_events_enabled(self) -> list[str]:
        """The event types the datapath emits now, as read back from the kernel."""
        with self._lock:
            if self._loaded is None:
                return []
            table = self._loaded.bpf[trace_events.GATE_MAP]
            bits = int(table[table.Key(0)].value)
        return [name for bit, name in ((trace_events.TRACE_F_TRACE, "trace"),
                                       (trace_events.TRACE_F_POLICY_VERDICT, "policy-verdict"))
                if bits & bit]

    def unsubscribe_drops(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            if self._events is not None:
                self._events.unsubscribe(callback)
