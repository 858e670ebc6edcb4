"""The libnetwork NetworkDriver: each call becomes an agent endpoint operation.

libnetwork's model differs from the agent's usual attach in one way: dockerd wants the
driver to create an interface in the *host* namespace and name it (Join's ``SrcName``);
dockerd then moves it into the container's sandbox, renames it ``eth<N>`` and puts the
addresses, gateway and routes the driver returned on it. So the endpoint is created
with ``"netns": null, "docker": true``: the agent builds the veth pair, leaves the
container end in the host namespace under a temporary name (``container-interface``)
and plumbs only the host side (routes, BPF). CreateEndpoint does that; Join only reads
the endpoint back.

Fail closed: the endpoint is created with ``reserved:init`` as its only label, the
reserved *init* identity. Its real ``container:`` labels arrive from the label watcher
(:mod:`.labels`) once dockerd has started the container.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict
from typing import Any

from ..errors import CiliumPyError, InvalidInput, NotFound
from ..logs import get_logger
from .agent_api import AgentAPI
from .ipam import host_cidr
from .isolation import Isolator
from .ports import Binding, Publisher, requests_from
from .protocol import (
    OPT_ENABLE_IPV6,
    OPT_EXPOSED_PORTS,
    OPT_GENERIC,
    OPT_INTERNAL,
    OPT_PORTMAP,
    ROUTE_CONNECTED,
    ROUTE_NEXTHOP,
    DriverError,
    require_str,
)
from .state import DriverState

log = get_logger("docker.network")

INIT_LABELS = ["reserved:init"]
DST_PREFIX = "eth"
MAC_KEY = "com.docker.network.endpoint.macaddress"


def agent_endpoint_id(docker_eid: str) -> str:
    """The agent endpoint id of a Docker endpoint: the same string.

    Docker endpoint ids are 64 hex digits, valid agent ids as they are; keeping them
    equal makes the mapping need no storage and lets the label watcher find an
    endpoint from ``docker inspect``'s ``EndpointID``.
    """
    return docker_eid


def _plain(address: str | None) -> str | None:
    return address.split("/")[0] if address else None


def _pools_of(data: Any) -> list[dict[str, Any]]:
    if data in (None, ""):
        return []
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise InvalidInput("IPv4Data/IPv6Data must be lists of objects")
    return data


class NetworkDriver:
    def __init__(self, agent: AgentAPI, state: DriverState, ports: Publisher,
                 isolation: Isolator) -> None:
        self.agent = agent
        self.state = state
        self.ports = ports
        self.isolation = isolation

    # -- handshake -------------------------------------------------------------------

    def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Scope": "local", "ConnectivityScope": "local"}

    # -- networks --------------------------------------------------------------------

    def _check_pools(self, family: int, pools: list[dict[str, Any]]) -> None:
        """Refuse networks whose addresses the agent would not route (e.g. Docker's IPAM)."""
        if not pools:
            return
        status = (self.agent.ipam_status().get("pools") or {}).get(f"ipv{family}") or {}
        agent_pool = status.get("pool") if status.get("enabled") else None
        for data in pools:
            pool = data.get("Pool") or ""
            try:
                same = agent_pool is not None and (
                    ipaddress.ip_network(pool, strict=False) == ipaddress.ip_network(agent_pool))
            except ValueError as exc:
                raise InvalidInput(f"IPv{family}Data Pool {pool!r} is not a prefix") from exc
            if not same:
                raise DriverError(
                    f"IPv{family} pool {pool or '(none)'} is not the cilium-py agent's pool "
                    f"({agent_pool or f'IPv{family} disabled'}): create cilium-py networks "
                    "with --ipam-driver cilium-py"
                )

    def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        nid = require_str(body, "NetworkID")
        options = body.get("Options") or {}
        if not isinstance(options, dict):
            raise InvalidInput("Options must be an object")
        v4 = _pools_of(body.get("IPv4Data"))
        v6 = _pools_of(body.get("IPv6Data"))
        self._check_pools(4, v4)
        self._check_pools(6, v6)
        enable_v6 = bool(options.get(OPT_ENABLE_IPV6))
        if enable_v6 and not v6:
            raise DriverError(
                "--ipv6 needs an IPv6 pool: add --ipam-driver cilium-py (and, with a "
                "dockerd that does not request one itself, --subnet <the agent's IPv6 pool>)"
            )
        record = {
            "ipv4": [d.get("Pool") for d in v4],
            "ipv6": [d.get("Pool") for d in v6],
            "enable-ipv6": enable_v6,
            # --internal: no default route, nothing forwarded past the pools (isolation.py)
            "internal": options.get(OPT_INTERNAL) is True,
            "generic": options.get(OPT_GENERIC) or {},
        }
        with self.state.edit() as doc:
            doc["networks"][nid] = record
        log.info("network created", extra={"fields": {"network": nid, **record}})
        return {}

    def delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        nid = require_str(body, "NetworkID")
        with self.state.edit() as doc:
            doc["networks"].pop(nid, None)
        return {}

    def allocate_network(self, body: dict[str, Any]) -> dict[str, Any]:
        # Only swarm-scoped ("global") drivers are asked to allocate; ours is local.
        require_str(body, "NetworkID")
        return {"Options": {}}

    def free_network(self, body: dict[str, Any]) -> dict[str, Any]:
        require_str(body, "NetworkID")
        return {}

    # -- endpoints -------------------------------------------------------------------

    def _families(self, nid: str, iface: dict[str, Any]) -> set[int]:
        """Address families the Docker network has (from its pools, or what dockerd sent)."""
        net = self.state.network(nid)
        if net is not None:
            fams = {f for f, key in ((4, "ipv4"), (6, "ipv6")) if net.get(key)}
            if fams:
                return fams
        fams = {f for f, key in ((4, "Address"), (6, "AddressIPv6")) if iface.get(key)}
        return fams or {4}

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        nid = require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        iface = body.get("Interface") or {}
        if not isinstance(iface, dict):
            raise InvalidInput("Interface must be an object")
        if iface.get("MacAddress"):
            raise DriverError(
                "a fixed MAC address (--mac-address) is not supported on cilium-py networks: "
                "the agent chooses the MAC its datapath validates"
            )
        request = {
            "netns": None,
            "docker": True,
            "interface-name": "eth0",
            "container-id": "",
            "container-name": "",
            "labels": list(INIT_LABELS),
            "addressing": {"ipv4": _plain(iface.get("Address")),
                           "ipv6": _plain(iface.get("AddressIPv6"))},
        }
        ep_id = agent_endpoint_id(eid)
        ep = self.agent.put_endpoint(ep_id, request)
        isolated = False
        try:
            reply = self._interface_reply(nid, iface, ep)
            if not ep.get("container-interface"):
                raise DriverError(
                    "the agent did not return a container-interface for a docker endpoint; "
                    "it is too old for this plugin")
            ipv4, ipv6 = self._docker_addresses(nid, iface, ep)
            net = self.state.network(nid) or {}
            internal = bool(net.get("internal"))
            if internal:
                # Before the container exists, so its first packet is already held in.
                self.isolation.isolate(eid, [
                    (family, address, pool)
                    for family, address, key in ((4, ipv4, "ipv4"), (6, ipv6, "ipv6"))
                    if address for pool in net.get(key) or [] if pool])
                isolated = True
            with self.state.edit() as doc:
                doc["endpoints"][eid] = {
                    "network": nid,
                    "agent-id": ep_id,
                    "internal": internal,
                    "ipv4": ipv4,
                    "ipv6": ipv6,
                    "ports": [],
                    "exposed": [],
                    # What Join and EndpointOperInfo answer with: dockerd calls them on
                    # every start, and asking the agent each time is pure latency.
                    "container-interface": ep.get("container-interface"),
                    "mac": ep.get("mac"),
                    "gateway": ep.get("gateway") or {},
                    "routes": ep.get("routes") or [],
                }
        except BaseException:
            self._forget_agent_endpoint(ep_id)
            if isolated:
                self._release_isolation(eid, None)
            raise
        log.info("endpoint created", extra={"fields": {
            "endpoint": eid, "network": nid, "identity": ep.get("identity"),
            "addressing": ep.get("addressing")}})
        return {"Interface": reply}

    def _docker_addresses(self, nid: str, iface: dict[str, Any],
                          ep: dict[str, Any]) -> tuple[str | None, str | None]:
        """The endpoint's addresses in the families the Docker network has.

        The agent may hold an address of a family the Docker network lacks; the
        container never has it configured, so nothing (ports) may point at it.
        """
        families = self._families(nid, iface)
        addressing = ep.get("addressing") or {}
        return (_plain(addressing.get("ipv4")) if 4 in families else None,
                _plain(addressing.get("ipv6")) if 6 in families else None)

    def _interface_reply(self, nid: str, iface: dict[str, Any],
                         ep: dict[str, Any]) -> dict[str, str]:
        """Only what dockerd did not set: it rejects a reply that changes its own fields."""
        families = self._families(nid, iface)
        addressing = ep.get("addressing") or {}
        reply: dict[str, str] = {}
        for family, key, ep_key in ((4, "Address", "ipv4"), (6, "AddressIPv6", "ipv6")):
            given = iface.get(key)
            got = addressing.get(ep_key)
            if given:
                if got and _plain(given) != _plain(got):
                    raise DriverError(
                        f"the agent gave {got} instead of the requested {given}")
                continue
            if family in families and got:
                reply[key] = host_cidr(got)
        if ep.get("mac"):
            reply["MacAddress"] = ep["mac"]
        return reply

    def _forget_agent_endpoint(self, ep_id: str) -> None:
        try:
            self.agent.delete_endpoint(ep_id)
        except CiliumPyError as exc:
            log.warning("rollback of endpoint failed", extra={"fields": {
                "endpoint": ep_id, "error": exc.message}})

    def _revoke_ports(self, eid: str) -> None:
        """Remove the endpoint's port rules, unless its record shows it never had any.

        Revoking lists both tables of both families (four ``iptables -S`` runs, about
        25 ms), and dockerd revokes twice per ``docker rm`` (RevokeExternalConnectivity,
        then DeleteEndpoint). A record without ``published`` or ``ports`` is proof
        there is nothing to remove: ``published`` is saved *before* rules are written.
        Without a record (the state file was lost) the full sweep runs.
        """
        record = self.state.endpoint(eid)
        if record is not None and not record.get("published") and not record.get("ports"):
            return
        self.ports.revoke(eid)
        with self.state.edit() as doc:
            entry = doc["endpoints"].get(eid)
            if entry is not None:
                entry["published"] = False

    def _release_isolation(self, eid: str, record: dict[str, Any] | None) -> None:
        """Remove an internal endpoint's isolation rules; without a record, look anyway."""
        if record is not None and not record.get("internal"):
            return
        try:
            self.isolation.release(eid)
        except CiliumPyError as exc:
            log.warning("removing isolation rules failed", extra={"fields": {
                "endpoint": eid, "error": exc.message}})

    def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        self._revoke_ports(eid)
        self._release_isolation(eid, self.state.endpoint(eid))
        self.agent.delete_endpoint(agent_endpoint_id(eid))  # 404 counts as done
        with self.state.edit() as doc:
            doc["endpoints"].pop(eid, None)
        log.info("endpoint deleted", extra={"fields": {"endpoint": eid}})
        return {}

    def endpoint_info(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answered from the driver's state: dockerd asks twice per container start."""
        require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        record = self.state.endpoint(eid) or {}
        value: dict[str, Any] = {"cilium-py.endpoint-id": agent_endpoint_id(eid)}
        if record.get("mac"):
            value[MAC_KEY] = record["mac"]
        if record.get("ports"):
            value[OPT_PORTMAP] = [
                Binding(**b).to_docker(record.get("ipv4") or record.get("ipv6") or "")
                for b in record["ports"]]
        if record.get("exposed"):
            value[OPT_EXPOSED_PORTS] = record["exposed"]
        return {"Value": value}

    # -- sandbox ---------------------------------------------------------------------

    def _endpoint(self, eid: str) -> dict[str, Any]:
        try:
            return self.agent.get_endpoint(agent_endpoint_id(eid))
        except NotFound as exc:
            raise DriverError(f"endpoint {eid[:12]} is unknown to the cilium-py agent") from exc

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        nid = require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        sandbox = require_str(body, "SandboxKey")
        record = self.state.endpoint(eid) or {}
        ep = record if record.get("container-interface") else self._endpoint(eid)
        self._claim_sandbox(eid, sandbox)
        src = ep.get("container-interface")
        if not src:
            raise DriverError(
                f"endpoint {eid[:12]} has no container-interface: it was not created for "
                "Docker (its container end is already inside a namespace)")
        families = self._families(nid, {})
        gateway = ep.get("gateway") or {}
        net = self.state.network(nid) or {}
        pools = {f: [p for p in net.get(key) or [] if p] for f, key in ((4, "ipv4"), (6, "ipv6"))}
        reply: dict[str, Any] = {
            "InterfaceName": {"SrcName": src, "DstPrefix": DST_PREFIX},
            "StaticRoutes": static_routes(ep.get("routes") or [], gateway, families, pools),
            "DisableGatewayService": True,
        }
        if net.get("internal"):
            return reply  # no default route out of an internal network
        if 4 in families and gateway.get("ipv4"):
            reply["Gateway"] = _plain(gateway["ipv4"])
        if 6 in families and gateway.get("ipv6"):
            reply["GatewayIPv6"] = _plain(gateway["ipv6"])
        return reply

    def _claim_sandbox(self, eid: str, sandbox: str) -> None:
        """One cilium-py endpoint per container.

        Every cilium-py network shares the agent's pool and router, so a second
        interface would need the same gateway route as the first ("file exists" in
        dockerd) and its replies would leave through the first interface, whose datapath
        drops them as spoofed. Networks are not the unit of segmentation here; labels
        and policy are. So the second one is refused with a message that says so.
        """
        with self.state.edit() as doc:
            for other, record in doc["endpoints"].items():
                if other != eid and record.get("sandbox") == sandbox:
                    raise DriverError(
                        "the container is already on a cilium-py network (endpoint "
                        f"{other[:12]}): cilium-py networks share one address pool and "
                        "router, so a container joins only one of them; use labels and "
                        "policy to separate workloads")
            doc["endpoints"].setdefault(eid, {"agent-id": agent_endpoint_id(eid)})
            doc["endpoints"][eid]["sandbox"] = sandbox

    def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        # dockerd moves the interface back out of the sandbox itself; the endpoint and
        # its datapath state stay until DeleteEndpoint.
        require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        with self.state.edit() as doc:
            record = doc["endpoints"].get(eid)
            if record is not None:
                record.pop("sandbox", None)
        return {}

    # -- published ports -------------------------------------------------------------

    def program_external(self, body: dict[str, Any]) -> dict[str, Any]:
        require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        options = body.get("Options") or {}
        if not isinstance(options, dict):
            raise InvalidInput("Options must be an object")
        requests = requests_from(options, OPT_PORTMAP)
        exposed = options.get(OPT_EXPOSED_PORTS) or []
        record = self.state.endpoint(eid)
        if record is None or not (record.get("ipv4") or record.get("ipv6")):
            ipv4, ipv6 = self._docker_addresses(body["NetworkID"], {}, self._endpoint(eid))
            record = {**(record or {}), "ipv4": ipv4, "ipv6": ipv6}
        if requests:
            # Saved before any rule exists, so a crash mid-publish cannot leave rules
            # that a later revoke would skip.
            with self.state.edit() as doc:
                doc["endpoints"].setdefault(eid, {"network": body["NetworkID"],
                                                  "agent-id": agent_endpoint_id(eid)})
                doc["endpoints"][eid]["published"] = True
        bindings = self.ports.publish(eid, record.get("ipv4"), record.get("ipv6"), requests)
        update = {"ipv4": record.get("ipv4"), "ipv6": record.get("ipv6"),
                  "ports": [asdict(b) for b in bindings], "exposed": exposed}
        if all(k in record and record[k] == v for k, v in update.items()):
            # The usual ``docker run`` without -p: CreateEndpoint recorded all of this
            # already, and saving the state file costs a dump of every endpoint.
            return {}
        with self.state.edit() as doc:
            entry = doc["endpoints"].setdefault(eid, {"network": body["NetworkID"],
                                                      "agent-id": agent_endpoint_id(eid)})
            entry.update(update)
        return {}

    def revoke_external(self, body: dict[str, Any]) -> dict[str, Any]:
        require_str(body, "NetworkID")
        eid = require_str(body, "EndpointID")
        self._revoke_ports(eid)
        with self.state.edit() as doc:
            entry = doc["endpoints"].get(eid)
            if entry is not None:
                entry["ports"] = []
                entry["exposed"] = []
        return {}

    # -- discovery (cluster membership; a local driver has nothing to do) --------------

    def discover(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}


def static_routes(routes: list[dict[str, Any]], gateway: dict[str, Any],
                  families: set[int],
                  pools: dict[int, list[str]] | None = None) -> list[dict[str, Any]]:
    """The agent's container routes as libnetwork StaticRoutes, plus the pools.

    Default routes are left out: dockerd installs them from ``Gateway``/``GatewayIPv6``
    and would fail on a duplicate. A route without a gateway is a connected route (the
    host route to the gateway, which is what makes a ``/32`` address usable).

    Each pool of the network gets a route via the router, after the connected route
    that makes the router reachable: a container on several networks keeps only one
    default route (dockerd gives it to the first network, Docker's default bridge for
    ``docker run`` then ``docker network connect``), and without these routes its
    traffic to cilium-py endpoints would leave through that other network, masqueraded
    to a node address, instead of through its cilium-py interface with its own identity.
    """
    out: list[dict[str, Any]] = []
    for route in routes:
        family = int(route.get("family") or ipaddress.ip_network(route["dst"], False).version)
        dst = route.get("dst") or ""
        if family not in families or not dst:
            continue
        if ipaddress.ip_network(dst, strict=False).prefixlen == 0:
            continue
        via = route.get("gateway")
        if via:
            out.append({"Destination": dst, "RouteType": ROUTE_NEXTHOP, "NextHop": via})
        else:
            out.append({"Destination": dst, "RouteType": ROUTE_CONNECTED})
    if not out:
        for family, key in ((4, "ipv4"), (6, "ipv6")):
            if family in families and gateway.get(key):
                out.append({"Destination": host_cidr(gateway[key]),
                            "RouteType": ROUTE_CONNECTED})
    for family, key in ((4, "ipv4"), (6, "ipv6")):
        router = gateway.get(key)
        if family not in families or not router:
            continue
        for pool in (pools or {}).get(family, []):
            dst = str(ipaddress.ip_network(pool, strict=False))
            if all(r["Destination"] != dst for r in out):
                out.append({"Destination": dst, "RouteType": ROUTE_NEXTHOP,
                            "NextHop": _plain(router)})
    return out
