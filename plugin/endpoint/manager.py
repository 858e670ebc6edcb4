"""The endpoint manager: attach, detach and restore container interfaces.

Attach runs forwards (addresses -> identity -> veth and addresses in the container ->
map entries and programs) and every step registers its undo, so a failure at any
point unwinds what was done and leaves no veth, address or map entry behind. The store
record is written before the kernel work starts ("not-ready") so that an agent killed
midway finds the half-made endpoint on restart and finishes or removes it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..errors import CiliumPyError, Conflict, InvalidInput, NotFound, Unavailable
from ..identity import IdentityAllocator
from ..ipam import IPAM
from ..labels import LabelSet
from ..labels.label import LabelError
from ..logs import get_logger
from ..store import Store
from . import hostside, plumbing
from .endpoint import Endpoint
from .reaper import LinkReaper
from .undo import UndoStack

log = get_logger("endpoint")

KEY_PREFIX = "cilium-py/endpoints/"
# A veth whose endpoint is deleted but which the reaper has not removed yet: start-up
# finishes these. Only these: another agent instance on the same host (tests beside an
# installed agent, a second plugin) has lxc veths this agent never made.
REAP_PREFIX = "cilium-py/endpoint-reap/"
# IPAM owners of addresses held before their endpoint exists (libnetwork's IPAM driver
# asks for an address first); an endpoint that requests such an address adopts it.
RESERVATION_PREFIX = "reservation/"


def _netns_id(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


class Datapath(Protocol):
    def attach_endpoint(self, ep: Endpoint) -> None: ...
    def detach_endpoint(self, ep: Endpoint, *, programs: bool = True) -> None: ...


class EndpointPolicy(Protocol):
    """What attach needs of the policy loop (the agent's). Neither call's failure is
    swallowed: an endpoint whose policy is not in its maps must not run."""

    def close(self, ep: Endpoint) -> None:
        """Make the endpoint deny everything (but what --allow-host-ingress lets in)
        before its programs see a packet."""

    def enforce(self, ep: Endpoint, event: str) -> None:
        """Write the endpoint's policy (and what its arrival changes for others);
        raise if its own policy could not be written."""


def parse_labels(labels: list[str]) -> LabelSet:
    try:
        return LabelSet.parse(labels)
    except LabelError as exc:
        raise InvalidInput(f"invalid label: {exc}", {"labels": str(exc)}) from exc


class EndpointManager:
    def __init__(
        self,
        store: Store,
        ipam: IPAM,
        identities: IdentityAllocator,
        datapath: Datapath | None,
        on_change: Callable[[Endpoint, str], None] | None = None,
        label_sources: list[Callable[[list[str], dict[str, Any]], list[str]]] | None = None,
    ) -> None:
        # Extra label providers (Kubernetes pod labels); each returns labels to add.
        self.label_sources = label_sources or []
        # Interface MTU for new endpoints; None: the kernel's default (1500). An overlay
        # lowers it by its encapsulation overhead.
        self.mtu: int | None = None
        self.store = store
        self.ipam = ipam
        self.identities = identities
        self.datapath = datapath
        self.on_change = on_change
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._cache: dict[str, Endpoint] = {}
        self._cache_lock = threading.Lock()
        self.reaper = LinkReaper()
        # The policy loop; None (API unit tests, no datapath) attaches nothing anyway.
        self.policy: EndpointPolicy | None = None

    # -- helpers -------------------------------------------------------------------

    @contextmanager
    def _locked(self, ep_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(ep_id, threading.Lock())
        with lock:
            yield

    def _save(self, ep: Endpoint) -> None:
        self.store.put(KEY_PREFIX + ep.id, ep.to_json())
        with self._cache_lock:
            self._cache[ep.id] = ep

    def _forget(self, ep_id: str) -> None:
        self.store.delete(KEY_PREFIX + ep_id)
        with self._cache_lock:
            self._cache.pop(ep_id, None)

    def _load(self, ep_id: str) -> Endpoint | None:
        with self._cache_lock:
            cached = self._cache.get(ep_id)
        if cached is not None:
            return cached
        kv = self.store.get(KEY_PREFIX + ep_id)
        return Endpoint.from_json(kv.value) if kv else None

    def _notify(self, ep: Endpoint, event: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(ep, event)
            except Exception:  # noqa: BLE001 - a listener must not break attach
                log.exception("endpoint change listener failed")

    # -- queries -------------------------------------------------------------------

    def get(self, ep_id: str) -> Endpoint:
        ep = self._load(ep_id)
        if ep is None:
            raise NotFound(f"endpoint {ep_id} not found", {"id": ep_id})
        return ep

    def interface(self, ep_id: str) -> dict[str, Any]:
        """The endpoint's container interface as the kernel has it now (CNI CHECK
        compares it with what ADD reported). Read here, with the netlink library the
        agent has loaded, so the CNI plugin need not fork ``ip`` in the namespace."""
        ep = self.get(ep_id)
        if ep.docker or not ep.netns:
            raise Conflict(f"endpoint {ep_id} is Docker's: dockerd owns its namespace",
                           {"id": ep_id})
        return {"netns": ep.netns, **plumbing.interface_view(ep.netns, ep.interface_name)}

    def by_ifindex(self, ifindex: int) -> Endpoint | None:
        with self._cache_lock:
            for ep in self._cache.values():
                if ep.ifindex == ifindex:
                    return ep
        return None

    def list(self) -> list[Endpoint]:
        with self._cache_lock:
            return sorted(self._cache.values(), key=lambda e: e.id)

    # -- attach --------------------------------------------------------------------

    def create(self, ep_id: str, req: dict[str, Any]) -> tuple[Endpoint, bool]:
        """Attach an endpoint; returns (endpoint, created). Idempotent per request."""
        if self.datapath is None:
            # Without the datapath (an agent that never took over the node, as in the
            # API's unit tests) nothing may be plumbed: it would run unenforced.
            raise Unavailable("the BPF datapath is not running: endpoints cannot attach")
        given = list(req.get("labels") or [])
        for source in self.label_sources:
            given += [lbl for lbl in source(given, req) if lbl not in given]
        labels = parse_labels(given)
        with self._locked(ep_id):
            existing = self._load(ep_id)
            if existing is not None:
                same = (
                    existing.netns == req.get("netns")
                    and existing.docker == bool(req.get("docker"))
                    and existing.interface_name == req["interface_name"]
                    and existing.container_id == req.get("container_id", "")
                )
                if same and existing.state == "ready":
                    return existing, False
                if not same:
                    raise Conflict(
                        f"endpoint {ep_id} exists with another netns, interface or container",
                        {"id": ep_id},
                    )
                # A half-made endpoint from an earlier try: remove it and start over.
                self._teardown(existing)
            return self._attach(ep_id, req, labels), True

    def _attach(self, ep_id: str, req: dict[str, Any], labels: LabelSet) -> Endpoint:
        """Attach in steps; each pushes its undo, so a failure anywhere unwinds
        exactly what was done (newest first) and leaves nothing behind."""
        docker = bool(req.get("docker"))
        netns_id = "" if docker else self._check_netns(ep_id, req["netns"])
        # A veth of a just-deleted endpoint (this one, or one in the same container)
        # may still be on its way out: let it go first.
        self.reaper.wait_for(plumbing.host_ifname(ep_id), netns_id)
        ep = Endpoint(
            id=ep_id,
            netns=req.get("netns"),
            netns_id=netns_id,
            docker=docker,
            interface_name=req["interface_name"],
            container_id=req.get("container_id", ""),
            container_name=req.get("container_name", ""),
            network=req.get("network", ""),
            labels=labels.strings(),
            enforcement=req.get("enforcement"),
            host_interface=plumbing.host_ifname(ep_id),
        )
        try:
            with UndoStack("attach", {"id": ep_id}) as undo:
                self._allocate_addresses(ep, req.get("addressing") or {}, undo)
                self._record(ep, undo)
                self._allocate_identity(ep, labels, undo)
                self._plumb(ep, undo)
                self._enforce(ep, undo)
                ep.state = "ready"
                self._save(ep)
                undo.commit()
        except CiliumPyError as exc:
            log.warning("endpoint attach refused: %s", exc.message,
                        extra={"fields": {"id": ep_id}})
            raise
        log.info("endpoint ready", extra={"fields": {
            "id": ep_id, "ifindex": ep.ifindex, "ipv4": ep.ipv4, "ipv6": ep.ipv6,
            "identity": ep.identity}})
        return ep

    def _check_netns(self, ep_id: str, netns: str) -> str:
        """The namespace must exist and hold no other cilium-py interface; returns its
        "dev:inode" id."""
        if not plumbing.netns_alive(netns):
            raise InvalidInput(
                f"network namespace {netns} does not exist or is not a network namespace",
                {"netns": netns},
            )
        netns_id = _netns_id(netns)
        with self._cache_lock:
            other = next((e for e in self._cache.values()
                          if e.netns_id == netns_id and e.id != ep_id), None)
        if other is not None:
            # Both interfaces would share one pool and gateway: the second default
            # route and its source-validated traffic cannot work. Say so up front.
            raise Conflict(
                f"network namespace {netns} already has a cilium-py interface "
                f"({other.interface_name}, endpoint {other.id}); a container gets one",
                {"netns": netns},
            )
        return netns_id

    def _allocate_addresses(self, ep: Endpoint, requested: dict[str, Any],
                            undo: UndoStack) -> None:
        """Step 1: an address per enabled family (the requested one if given)."""
        for fam, key in ((4, "ipv4"), (6, "ipv6")):
            wanted = requested.get(key)
            if ep.docker and not wanted:
                # libnetwork reserved what the network uses; nothing more.
                continue
            if not self.ipam.enabled(fam):
                if wanted:
                    raise InvalidInput(f"IPv{fam} is turned off on this node", {key: "off"})
                continue
            if wanted:
                holder = self.ipam.owner_of(wanted)
                if holder is not None and holder.startswith(RESERVATION_PREFIX):
                    self.ipam.release(wanted)
            addr = self.ipam.allocate(fam, ep.id, wanted)
            undo.push(f"release {addr}", lambda a=addr: self.ipam.release(a, ep.id))
            ep.addressing[key] = str(addr)
            ep.gateway[key] = str(self.ipam.router(fam))

    def _record(self, ep: Endpoint, undo: UndoStack) -> None:
        """Step 2: the store record, "not-ready", before any kernel work, so an agent
        killed midway finds the half-made endpoint on restart."""
        self._save(ep)
        undo.push("forget record", lambda: self._forget(ep.id))

    def _allocate_identity(self, ep: Endpoint, labels: LabelSet, undo: UndoStack) -> None:
        """Step 3: {reserved:init} (labels not known yet) is the init identity; any
        other set, the empty one included (labels known: none), gets an allocated one."""
        ep.identity = self.identities.allocate(labels, ep.id)
        undo.push("release identity", lambda: self.identities.release(ep.identity, ep.id))

    def _plumb(self, ep: Endpoint, undo: UndoStack) -> None:
        """Step 4: the veth pair, the container end with addresses, routes and the
        gateway neighbour (Docker: left in the host for libnetwork to move)."""
        if ep.docker:
            info, ep.container_interface = hostside.create_docker_link(
                ep.id, ep.ipv4, ep.ipv6, ep.gateway.get("ipv6"))
        else:
            info = plumbing.create_endpoint_link(
                ep.id, ep.netns, ep.interface_name,
                ipv4=ep.ipv4, ipv6=ep.ipv6,
                gw4=ep.gateway.get("ipv4"), gw6=ep.gateway.get("ipv6"), mtu=self.mtu,
            )
        undo.push("delete veth", lambda: plumbing.delete_endpoint_link(
            info.host_ifname, ep.ipv4, ep.ipv6))
        ep.host_interface = info.host_ifname
        ep.ifindex = info.host_ifindex
        ep.host_mac = info.host_mac
        ep.mac = info.container_mac
        ep.routes = plumbing.container_routes(ep.gateway.get("ipv4"), ep.gateway.get("ipv6"))

    def _enforce(self, ep: Endpoint, undo: UndoStack) -> None:
        """Step 5: map entries and programs on the host veth, then the policy: in
        force before the caller hears "ready"."""
        datapath = self.datapath
        assert datapath is not None  # create() refuses without one
        undo.push("detach datapath", lambda: datapath.detach_endpoint(ep))
        # Fail closed: the endpoint's flags say "deny" from its first packet on; only
        # its own policy, written below, opens what the rules allow.
        if self.policy is not None:
            self.policy.close(ep)
        datapath.attach_endpoint(ep)
        with self._cache_lock:
            self._cache[ep.id] = ep
        self._notify(ep, "created")
        if self.policy is not None:
            self.policy.enforce(ep, "created")

    # -- state -------------------------------------------------------------------

    def mark_not_ready(self, ep: Endpoint, reason: str) -> None:
        """The endpoint is denying and why (a failed regeneration). Takes no endpoint
        lock: the policy loop calls it while an attach may hold one."""
        if ep.state == "disconnecting":
            return
        ep.state, ep.state_reason = "not-ready", reason
        if self._load(ep.id) is ep:
            self._save(ep)

    def mark_ready(self, ep: Endpoint) -> None:
        """Its policy is in its maps again (a retried regeneration succeeded)."""
        if ep.state != "not-ready" or not ep.state_reason or not ep.ifindex:
            return
        ep.state, ep.state_reason = "ready", ""
        if self._load(ep.id) is ep:
            self._save(ep)

    def release_vanished(self) -> list[str]:
        """Endpoints whose network namespace disappeared without a DEL (container
        killed, ``ip netns del``): their veth and addresses are released and their
        datapath entries removed; the record stays, not-ready with the reason, until
        the runtime's DEL (or the next start) forgets it. Returns their ids."""
        gone = []
        for ep in self.list():
            if ep.docker or not ep.ifindex or ep.state == "disconnecting":
                continue
            if plumbing.netns_alive(ep.netns or "") and \
                    plumbing.link_state(ep.host_interface) is not None:
                continue
            with self._locked(ep.id):
                if self._load(ep.id) is not ep or not ep.ifindex:
                    continue
                if self.datapath is not None:
                    self.datapath.detach_endpoint(ep, programs=False)
                plumbing.delete_endpoint_link(ep.host_interface, ep.ipv4, ep.ipv6)
                self._notify(ep, "deleted")
                released = [a for a in ep.addressing.values() if a]
                self.ipam.release_owner(ep.id)
                ep.addressing = {"ipv4": None, "ipv6": None}
                ep.ifindex = 0
                ep.state = "not-ready"
                ep.state_reason = (f"network namespace {ep.netns} is gone: veth and "
                                   f"addresses {', '.join(released) or '-'} released")
                self._save(ep)
            log.warning("endpoint's namespace vanished", extra={"fields": {
                "id": ep.id, "netns": ep.netns}})
            gone.append(ep.id)
        return gone

    # -- detach --------------------------------------------------------------------

    def delete(self, ep_id: str) -> Endpoint:
        with self._locked(ep_id):
            ep = self._load(ep_id)
            if ep is None:
                raise NotFound(f"endpoint {ep_id} not found", {"id": ep_id})
            ep.state = "disconnecting"
            self._save(ep)
            self._teardown(ep, background=True)
        log.info("endpoint deleted", extra={"fields": {"id": ep_id}})
        self._notify(ep, "deleted")
        return ep

    def _teardown(self, ep: Endpoint, *, background: bool = False) -> None:
        """Undo an endpoint. With ``background`` (a caller's delete of a container
        interface), the veth and then the addresses go in the reaper's thread; the
        endpoint is unreachable and unlisted when this returns (see reaper.py)."""
        if self.datapath is not None and ep.ifindex:
            # The veth is deleted next and takes its tc filters with it.
            self.datapath.detach_endpoint(ep, programs=not ep.host_interface)
        if background and ep.host_interface and not ep.docker:
            addresses = [a for a in (ep.ipv4, ep.ipv6) if a]

            reap_key = REAP_PREFIX + ep.host_interface
            self.store.put(reap_key, ep.id.encode())

            def release(owner: str = ep.id) -> None:
                for addr in addresses:
                    self.ipam.release(addr, owner)
                self.store.delete(reap_key)

            self.reaper.submit(
                ep.host_interface, ep.netns_id,
                lambda name=ep.host_interface: plumbing.delete_endpoint_link(name), release)
            self._release_identity_and_forget(ep)
            return
        if ep.host_interface:
            plumbing.delete_endpoint_link(ep.host_interface, ep.ipv4, ep.ipv6)
        if ep.docker:
            # libnetwork releases the address itself (ReleaseAddress) after the endpoint
            # is gone: keep it reserved until then so nobody else gets it meanwhile.
            for addr in self.ipam.release_owner(ep.id):
                try:
                    self.ipam.allocate(addr.version, f"{RESERVATION_PREFIX}released:{ep.id}:"
                                       f"{addr.version}", str(addr))
                except CiliumPyError:
                    log.warning("could not keep released address reserved",
                                extra={"fields": {"address": str(addr)}})
        else:
            self.ipam.release_owner(ep.id)
        self._release_identity_and_forget(ep)

    def _release_identity_and_forget(self, ep: Endpoint) -> None:
        if ep.identity:
            self.identities.release(ep.identity, ep.id)
        self._forget(ep.id)

    # -- labels --------------------------------------------------------------------

    def set_labels(self, ep_id: str, labels: list[str]) -> Endpoint:
        parsed = parse_labels(labels)
        with self._locked(ep_id):
            ep = self.get(ep_id)
            if ep.state == "ready" and parse_labels(ep.labels) == parsed:
                # Nothing changes: no regeneration (label watchers repeat themselves).
                return ep
            old_identity = ep.identity
            ep.state = "regenerating"
            ep.labels = parsed.strings()
            ep.identity = self.identities.allocate(parsed, ep_id)
            try:
                if self.datapath is not None:
                    self.datapath.attach_endpoint(ep)
                self._save(ep)
                self._notify(ep, "labels")
                # A failure marks the endpoint not-ready (denying) and propagates.
                if self.policy is not None:
                    self.policy.enforce(ep, "labels")
            finally:
                if old_identity != ep.identity:
                    self.identities.release(old_identity, ep_id)
            ep.state, ep.state_reason = "ready", ""
            self._save(ep)
        return ep

    def set_container(self, ep_id: str, container_id: str, container_name: str) -> Endpoint:
        """Name a Docker endpoint's container, which libnetwork never tells the driver
        (the label watcher learns it from dockerd). Metadata only: identity, policy and
        datapath stay as they are."""
        with self._locked(ep_id):
            ep = self.get(ep_id)
            if (ep.container_id, ep.container_name) != (container_id, container_name):
                ep.container_id, ep.container_name = container_id, container_name
                self._save(ep)
        return ep

    # -- restore -------------------------------------------------------------------

    def restore(self) -> dict[str, int]:
        """Bring back every stored endpoint; clean up what is half-made or orphaned."""
        restored = removed = 0
        for kv in self.store.list(KEY_PREFIX):
            ep = Endpoint.from_json(kv.value)
            # A not-ready endpoint with a reason was attached and then failed a
            # regeneration: it is restored (denying) and retried. Without a reason
            # it is an attach an earlier agent did not finish.
            attached = ep.state in ("ready", "regenerating") or (
                ep.state == "not-ready" and bool(ep.state_reason) and ep.ifindex > 0)
            alive = (
                attached
                and (ep.docker or plumbing.netns_alive(ep.netns or ""))
                and plumbing.link_state(ep.host_interface) is not None
            )
            if not alive:
                log.info("removing stale endpoint", extra={"fields": {"id": ep.id}})
                try:
                    self._teardown(ep)
                except Exception:  # noqa: BLE001
                    log.exception("cleanup of stale endpoint failed")
                    self._forget(ep.id)
                removed += 1
                continue
            state = plumbing.link_state(ep.host_interface)
            if state is not None:
                ep.ifindex = state["ifindex"]
            if self.datapath is not None:
                self.datapath.attach_endpoint(ep)
            # Ready once the start-up regeneration has written its policy; a failure
            # there marks it not-ready again (the flags it keeps meanwhile are the
            # ones the previous agent left, denying if that one had failed too).
            ep.state = "ready" if ep.state != "not-ready" else ep.state
            self._save(ep)
            restored += 1
        known = {ep.host_interface for ep in self.list()}
        for kv in self.store.list(REAP_PREFIX):
            ifname = kv.key[len(REAP_PREFIX):]
            if ifname not in known and plumbing.link_state(ifname) is not None:
                log.info("removing the veth of a deleted endpoint",
                         extra={"fields": {"ifname": ifname}})
                plumbing.delete_endpoint_link(ifname)
                removed += 1
            self.store.delete(kv.key)
        owners = {ep.id for ep in self.list()}
        for address, owner in self.ipam.allocations().items():
            if owner not in owners and not owner.startswith(RESERVATION_PREFIX):
                self.ipam.release(address)
                removed += 1
        return {"restored": restored, "removed": removed}
