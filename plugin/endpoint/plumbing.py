"""Netlink plumbing of endpoints: the veth pair, addresses, routes and neighbours.

Every function works in the network namespace of the calling thread, which is
"the host" (the agent may itself run inside a test-made node namespace); the
container's namespace is given as a path (``/var/run/netns/x``, ``/proc/PID/ns/net``).

The layout follows Cilium's: the container gets /32 and /128 addresses and reaches
everything through the router address, which lives on the host's ``cilium_host``.
Static (PERMANENT) neighbour entries on both ends mean neither side ever needs
ARP or NDP across the veth, so an endpoint can talk the moment it is plumbed (no
wait for IPv6 DAD on the host's link-local address) and the BPF programs the
datapath attaches later see only the endpoint's real traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from ..errors import Conflict, InvalidInput, NotFound
from ..netlink import nlbatch
from ..netlink.rtnl import (
    PlumbingError,
    addresses_of,
    find_link,
    ignore_missing,
    kernel_step,
    link_dict,
    link_kind,
    neighbours_on,
    routes_via,
)
from .naming import HOST_PREFIX, MAX_IFNAME, check_ifname, host_ifname
from .netns import NetnsHandle, netns_alive

__all__ = [
    "DEFAULT_ROUTER_DEVICE",
    "LinkInfo",
    "PlumbingError",
    "container_link_check",
    "interface_view",
    "container_routes",
    "create_endpoint_link",
    "delete_endpoint_link",
    "ensure_router_device",
    "host_ifname",
    "link_state",
    "list_host_links",
    "netns_alive",
    "remove_router_device",
]

DEFAULT_ROUTER_DEVICE = "cilium_host"
DEFAULT_ROUTER_PEER = "cilium_net"

_IPV4_FORWARD = "/proc/sys/net/ipv4/ip_forward"
_IPV6_FORWARD = "/proc/sys/net/ipv6/conf/all/forwarding"


@dataclass(frozen=True)
class LinkInfo:
    """What the datapath needs to program an endpoint's maps."""

    host_ifname: str
    host_ifindex: int
    host_mac: str
    container_mac: str
    container_ifindex: int
    ifname: str  # the interface's name inside the container
    mtu: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_links(cls, host_msg: Any, peer_msg: Any, ifname: str) -> LinkInfo:
        """From the link messages of the pair's two ends, just after creation."""
        return cls(
            host_ifname=host_msg.get("IFLA_IFNAME"),
            host_ifindex=host_msg["index"],
            host_mac=host_msg.get("IFLA_ADDRESS"),
            container_mac=peer_msg.get("IFLA_ADDRESS"),
            container_ifindex=peer_msg["index"],
            ifname=ifname,
            mtu=host_msg.get("IFLA_MTU"),
        )


# ---------------------------------------------------------------------------
# The router device
# ---------------------------------------------------------------------------


def ensure_router_device(
    name: str = DEFAULT_ROUTER_DEVICE,
    ipv4_router: str | None = None,
    ipv6_router: str | None = None,
    ipv4_pool: str | None = None,
    ipv6_pool: str | None = None,
    enable_forwarding: bool = True,
    peer_name: str | None = None,
) -> dict[str, Any]:
    """Create (or bring in line) the device holding the router addresses.

    Like Cilium's, it is a veth pair, ``cilium_host`` <-> ``cilium_net``, both up
    and both in the current namespace: a veth exists in every kernel (dummy devices
    are a module some kernels lack). The router addresses get /32 and /128 on
    ``name``, and each pool gets a route to it, so a pool address without an
    endpoint stays on the node instead of following the default route out.
    Calling this again with the same arguments changes nothing; with other
    arguments it removes the addresses and pool routes no longer wanted (the
    device is the agent's own). A device of that name that is not a veth is a
    Conflict.

    With ``enable_forwarding`` it turns on IPv4 forwarding, and IPv6 forwarding for
    all interfaces when an IPv6 router is given, in the CURRENT network namespace
    only. Note that ``net.ipv6.conf.all.forwarding=1`` also makes every interface of
    this namespace stop accepting router advertisements (unless accept_ra=2).
    Nothing is turned back off by ``remove_router_device``.
    """
    check_ifname(name, "router device name")
    peer = check_ifname(peer_name or _router_peer_name(name), "router peer device name")
    want_addrs = _router_addresses(ipv4_router, ipv6_router)
    want_routes = _pool_routes(ipv4_pool, ipv6_pool)
    with IPRoute() as ipr:
        msg = find_link(ipr, name)
        if msg is not None and link_kind(msg) != "veth":
            raise Conflict(f"{name} exists and is a {link_kind(msg)} device, not the agent's veth")
        if msg is None:
            with kernel_step(f"creating router device {name} <-> {peer}"):
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
            msg = find_link(ipr, name)
            if msg is None:  # pragma: no cover - deleted under our feet
                raise NotFound(f"router device {name} vanished while being created")
        index = msg["index"]
        for device in (peer, name):
            found = ipr.link_lookup(ifname=device)
            if found:
                with kernel_step(f"setting {device} up"):
                    ipr.link("set", index=found[0], state="up")
        _sync_addresses(ipr, index, name, want_addrs)
        _sync_pool_routes(ipr, index, name, want_routes)
        state = link_dict(find_link(ipr, name))
    if enable_forwarding:
        write_sysctl(_IPV4_FORWARD, "1")
        if ipv6_router is not None:
            write_sysctl(_IPV6_FORWARD, "1")
    return {
        "ifname": name,
        "ifindex": state["ifindex"],
        "mac": state["mac"],
        "peer": peer,
        "ipv4": str(want_addrs[4][0]) if 4 in want_addrs else None,
        "ipv6": str(want_addrs[6][0]) if 6 in want_addrs else None,
        "routes": sorted(str(r) for r in want_routes),
    }


def remove_router_device(name: str = DEFAULT_ROUTER_DEVICE) -> bool:
    """Delete the router device; its peer, addresses and pool routes go with it.

    Refuses to delete anything that is not a veth. True when it existed.
    """
    check_ifname(name, "router device name")
    with IPRoute() as ipr:
        msg = find_link(ipr, name)
        if msg is None:
            return False
        if link_kind(msg) != "veth":
            raise Conflict(f"{name} is a {link_kind(msg)} device, not the agent's veth")
        return _delete_link(ipr, msg["index"], name)


def _router_peer_name(name: str) -> str:
    if name == DEFAULT_ROUTER_DEVICE:
        return DEFAULT_ROUTER_PEER
    return name[: MAX_IFNAME - 4] + "_net"


def _router_addresses(
    ipv4_router: str | None, ipv6_router: str | None
) -> dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    want: dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = {}
    if ipv4_router is not None:
        want[4] = (_address(ipv4_router, 4, "ipv4 router"), 32)
    if ipv6_router is not None:
        want[6] = (_address(ipv6_router, 6, "ipv6 router"), 128)
    return want


def _pool_routes(
    ipv4_pool: str | None, ipv6_pool: str | None
) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    routes: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for text, family in ((ipv4_pool, 4), (ipv6_pool, 6)):
        if text is None:
            continue
        try:
            net = ipaddress.ip_network(str(text), strict=True)
        except ValueError as exc:
            raise InvalidInput(f"invalid IPv{family} pool {text!r}: {exc}") from None
        if net.version != family:
            raise InvalidInput(f"pool {text!r} is not an IPv{family} prefix")
        routes.add(net)
    return routes


def _sync_addresses(
    ipr: IPRoute,
    index: int,
    name: str,
    want: dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]],
) -> None:
    wanted = {(str(addr), plen) for addr, plen in want.values()}
    have = set()
    for entry in addresses_of(ipr, index):
        key = (str(ipaddress.ip_address(entry["address"])), entry["prefixlen"])
        if key in wanted:
            have.add(key)
            continue
        with kernel_step(f"removing stale address {key[0]} from {name}"):
            try:
                ipr.addr("del", index=index, address=key[0], prefixlen=key[1])
            except NetlinkError as exc:
                if not ignore_missing(exc):
                    raise
    for addr, plen in want.values():
        if (str(addr), plen) in have:
            continue
        extra = {"flags": IFA_F_NODAD} if addr.version == 6 else {}
        with kernel_step(f"adding router address {addr} to {name}"):
            ipr.addr("add", index=index, address=str(addr), prefixlen=plen, **extra)


def _sync_pool_routes(
    ipr: IPRoute,
    index: int,
    name: str,
    want: set[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    for route in routes_via(ipr, index):
        net = ipaddress.ip_network(route["dst"])
        if net in want:
            continue
        with kernel_step(f"removing stale route {net} from {name}"):
            try:
                ipr.route("del", dst=str(net), oif=index)
            except NetlinkError as exc:
                if not ignore_missing(exc):
                    raise
    for net in want:
        with kernel_step(f"routing pool {net} to {name}"):
            ipr.route("replace", dst=str(net), oif=index)


def write_sysctl(path: str, value: str) -> None:
    """Write a sysctl of the current namespace, skipping the write when it is set."""
    try:
        with open(path, encoding="ascii") as fh:
            if fh.read().strip() == value:
                return
        with open(path, "w", encoding="ascii") as fh:
            fh.write(value)
    except OSError as exc:
        raise PlumbingError(f"cannot set {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------
# Endpoint veths
# ---------------------------------------------------------------------------


def create_endpoint_link(
    endpoint_id: str,
    netns_path: str,
    ifname: str,
    ipv4: str | None = None,
    ipv6: str | None = None,
    gw4: str | None = None,
    gw6: str | None = None,
    mtu: int | None = None,
) -> LinkInfo:
    """Give the container at ``netns_path`` its interface ``ifname``, wired to the host.

    Creates the veth pair with the host end named ``host_ifname(endpoint_id)`` and
    the other end created directly inside the container's namespace under its final
    name (atomic: no moment where a half-configured interface sits on the host).
    Inside: loopback up, ``ipv4``/32 and ``ipv6``/128 (no DAD), a route to each
    gateway over the link, default routes via the gateways, and PERMANENT
    neighbour entries for the gateways pointing at the host end's MAC. On the host:
    a /32 and /128 route per endpoint address to the host end, and PERMANENT
    neighbour entries for them pointing at the container's MAC.

    Everything is checked before anything is made: InvalidInput for a missing path
    or one that is not a network namespace, a bad interface name or address;
    Conflict when ``ifname`` is taken in the container or the host end exists
    already (call ``delete_endpoint_link`` first to redo an endpoint). On a failure
    midway everything made so far is removed again.
    """
    addrs = _EndpointAddresses.parse(ipv4, ipv6, gw4, gw6)
    check_ifname(ifname)
    if mtu is not None:
        _check_mtu(mtu, addrs.ipv6 is not None)
    host_name = host_ifname(endpoint_id)
    with NetnsHandle(netns_path) as ns, nlbatch.RtnlSocket() as host, ns.rtnl() as cont:
        try:
            # One write: the pair (host end up, peer made in the container under its
            # final name), then the host end's index and MAC.
            host_msg = (nlbatch.Batch(f"creating veth {host_name} <-> {ifname} in {netns_path}")
                        .add("veth", nlbatch.new_veth(host_name, ifname, ns.fd, mtu))
                        .add(host_name, nlbatch.get_link(host_name))
                        .send(host))[0]
        except Conflict:
            _name_conflict(host, cont, host_name, ifname, netns_path, endpoint_id)
            raise
        host_index: int = host_msg["index"]
        try:
            # lo is ifindex 1 in every network namespace (registered first, when made).
            cont_msg = (nlbatch.Batch(f"looking up {ifname} in {netns_path}")
                        .add(ifname, nlbatch.get_link(ifname))
                        .add("setting lo up", nlbatch.link_up(1))
                        .send(cont))[0]
            info = LinkInfo.from_links(host_msg, cont_msg, ifname)
            _configure_container(ns, cont, info, addrs)
            configure_host_side(host, info, addrs.ipv4, addrs.ipv6)
            return info
        except BaseException:
            # The peer, its addresses, routes and neighbours, and the host routes
            # through the veth all go away with the host end.
            nlbatch.delete_link(host, host_index, host_name)
            raise


def _name_conflict(host: nlbatch.RtnlSocket, cont: nlbatch.RtnlSocket, host_name: str,
                   ifname: str, netns_path: str, endpoint_id: str) -> None:
    """After the kernel said "exists": name which of the two names is taken."""
    if nlbatch.lookup_link(host, host_name) is not None:
        raise Conflict(
            f"host interface {host_name} of endpoint {endpoint_id} exists already",
            {"host-interface": host_name},
        )
    if nlbatch.lookup_link(cont, ifname) is not None:
        raise Conflict(
            f"interface {ifname} already exists in {netns_path}",
            {"interface-name": ifname},
        )


def delete_endpoint_link(
    host_ifname: str, ipv4: str | None = None, ipv6: str | None = None
) -> bool:
    """Remove an endpoint's host routes and veth pair; True when there was one.

    Harmless when it is gone already (a container whose namespace died takes the
    pair with it). Refuses (InvalidInput) to delete anything but an endpoint veth:
    a veth whose peer is in another namespace or whose name has the ``lxc`` prefix.
    """
    check_ifname(host_ifname, "host interface name")
    with nlbatch.RtnlSocket() as host:
        msg = nlbatch.lookup_link(host, host_ifname)
        if msg is None:
            return False
        if not _is_endpoint_veth(msg, host_ifname):
            raise InvalidInput(
                f"{host_ifname} is not an endpoint veth (a {link_kind(msg)} device"
                f"{' whose peer is on the host' if link_kind(msg) == 'veth' else ''}); "
                "refusing to delete it",
                {"host-interface": host_ifname},
            )
        # The host routes and neighbours point at the veth, so the kernel removes them
        # with it; deleting them one by one first would only cost round trips.
        return nlbatch.delete_link(host, msg["index"], host_ifname)


def _is_endpoint_veth(msg: Any, name: str) -> bool:
    """A veth whose peer is in another namespace, or one named like ours: never the
    router device pair, the uplink or anything else on the host."""
    if link_kind(msg) != "veth":
        return False
    return msg.get("IFLA_LINK_NETNSID") is not None or name.startswith(HOST_PREFIX)


def container_routes(gw4: str | None, gw6: str | None) -> list[dict[str, Any]]:
    """The routes ``create_endpoint_link`` installs in a container, in the shape
    ``container_link_check`` reports them (for the endpoint model and CNI results)."""
    routes: list[dict[str, Any]] = []
    if gw4 is not None:
        routes.append({"family": 4, "dst": f"{gw4}/32", "gateway": None, "scope": "link"})
        routes.append({"family": 4, "dst": "0.0.0.0/0", "gateway": str(gw4), "scope": "global"})
    if gw6 is not None:
        gw = ipaddress.ip_address(gw6).compressed
        routes.append({"family": 6, "dst": f"{gw}/128", "gateway": None, "scope": "global"})
        routes.append({"family": 6, "dst": "::/0", "gateway": gw, "scope": "global"})
    return routes


@dataclass(frozen=True)
class _EndpointAddresses:
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    gw4: ipaddress.IPv4Address | None
    gw6: ipaddress.IPv6Address | None

    @classmethod
    def parse(
        cls, ipv4: str | None, ipv6: str | None, gw4: str | None, gw6: str | None
    ) -> _EndpointAddresses:
        if ipv4 is None and ipv6 is None:
            raise InvalidInput("an endpoint needs an IPv4 or an IPv6 address")
        a4 = _address(ipv4, 4, "ipv4") if ipv4 is not None else None
        a6 = _address(ipv6, 6, "ipv6") if ipv6 is not None else None
        g4 = _address(gw4, 4, "ipv4 gateway") if gw4 is not None else None
        g6 = _address(gw6, 6, "ipv6 gateway") if gw6 is not None else None
        if a4 is not None and g4 is None:
            raise InvalidInput("an IPv4 endpoint needs an IPv4 gateway")
        if a6 is not None and g6 is None:
            raise InvalidInput("an IPv6 endpoint needs an IPv6 gateway")
        if (a4 is not None and a4 == g4) or (a6 is not None and a6 == g6):
            raise InvalidInput("an endpoint address cannot be its own gateway")
        return cls(a4, a6, g4 if a4 else None, g6 if a6 else None)  # type: ignore[arg-type]


def _configure_container(
    ns: NetnsHandle, cont: nlbatch.RtnlSocket, info: LinkInfo, addrs: _EndpointAddresses
) -> None:
    index = info.container_ifindex
    if addrs.ipv6 is not None and ns.ipv6_off_by_default is not False:
        ns.run(lambda: _enable_ipv6(info.ifname, ns.path))
    batch = (nlbatch.Batch(f"configuring {info.ifname} in {ns.path}")
             .add(f"setting {info.ifname} up", nlbatch.link_up(index)))
    for addr, gw, plen in ((addrs.ipv4, addrs.gw4, 32), (addrs.ipv6, addrs.gw6, 128)):
        if addr is None or gw is None:
            continue
        batch.add(f"address {addr}", nlbatch.add_address(index, addr, plen))
        batch.add(f"neighbour {gw}", nlbatch.permanent_neighbour(index, gw, info.host_mac))
        batch.add(f"route to {gw}", nlbatch.host_route(index, gw, scope_link=plen == 32))
        batch.add(f"default route via {gw}", nlbatch.default_route(index, gw))
    batch.send(cont)


def configure_host_side(host: nlbatch.RtnlSocket, info: LinkInfo, ipv4: Any, ipv6: Any,
                        extra: list[tuple[str, Any]] | None = None) -> None:
    """On the host: a /32 and /128 route per endpoint address to the host end, and a
    permanent neighbour entry for each pointing at the container's MAC (plus any
    ``extra`` requests of the caller, in the same write)."""
    index = info.host_ifindex
    batch = nlbatch.Batch(f"routing the addresses of {info.host_ifname}")
    for label, msg in extra or []:
        batch.add(label, msg)
    for addr in (ipv4, ipv6):
        if addr is None:
            continue
        batch.add(f"route to {addr}", nlbatch.host_route(index, addr))
        batch.add(f"neighbour {addr}",
                  nlbatch.permanent_neighbour(index, addr, info.container_mac, replace=True))
    batch.send(host)


def _enable_ipv6(ifname: str, netns_path: str) -> None:
    """Runs inside the container's namespace: a runtime may have turned IPv6 off by
    default there; an endpoint given an IPv6 address needs it on its interface."""
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    try:
        with open(path, encoding="ascii") as fh:
            if fh.read().strip() == "0":
                return
        with open(path, "w", encoding="ascii") as fh:
            fh.write("0")
    except FileNotFoundError:
        raise InvalidInput(
            f"IPv6 is not available in {netns_path} (the kernel has it disabled)",
            {"netns": netns_path},
        ) from None


def _delete_link(ipr: IPRoute, index: int, name: str) -> bool:
    with kernel_step(f"deleting {name}"):
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if ignore_missing(exc):
                return False
            raise
    return True


def _check_mtu(mtu: int, ipv6: bool) -> None:
    low = 1280 if ipv6 else 68
    if not isinstance(mtu, int) or not low <= mtu <= 65535:
        raise InvalidInput(f"mtu {mtu!r} is out of range ({low}..65535)", {"mtu": str(mtu)})


def _bare(value: str) -> str:
    return str(value).split("/", 1)[0]


def _address(value: str, family: int, what: str) -> Any:
    try:
        addr = ipaddress.ip_address(_bare(value))
    except ValueError:
        raise InvalidInput(f"invalid {what} address {value!r}", {what: str(value)}) from None
    if addr.version != family:
        raise InvalidInput(f"{what} address {value} is not IPv{family}", {what: str(value)})
    return addr


# ---------------------------------------------------------------------------
# Inspection (reconcile, orphan cleanup, CNI CHECK)
# ---------------------------------------------------------------------------


def link_state(host_ifname: str) -> dict[str, Any] | None:
    """The host end of an endpoint as a dict (see ``netlink.link_dict``), or None."""
    with IPRoute() as host:
        msg = find_link(host, host_ifname)
        return link_dict(msg) if msg is not None else None


def list_host_links(prefix: str = "lxc") -> list[dict[str, Any]]:
    """Every veth on the host whose name starts with ``prefix``, for orphan sweeps."""
    result = []
    with IPRoute() as host:
        for msg in host.link("dump"):
            name = msg.get("IFLA_IFNAME") or ""
            if name.startswith(prefix) and link_kind(msg) == "veth":
                result.append(link_dict(msg))
    return sorted(result, key=lambda d: d["ifname"])


def container_link_check(netns_path: str, ifname: str) -> dict[str, Any]:
    """What ``ifname`` inside the container looks like now: the link fields plus
    its global ``addresses``, the ``routes`` out of it that were added (not the
    kernel's), and ``neighbours`` with a link-layer address. NotFound when the
    interface is missing; InvalidInput when the namespace is."""
    check_ifname(ifname)
    with NetnsHandle(netns_path) as ns, ns.iproute() as cont:
        msg = find_link(cont, ifname)
        if msg is None:
            raise NotFound(
                f"interface {ifname} does not exist in {netns_path}", {"interface-name": ifname}
            )
        state = link_dict(msg)
        index = msg["index"]
        state["addresses"] = addresses_of(cont, index)
        state["routes"] = routes_via(cont, index)
        state["neighbours"] = neighbours_on(cont, index)
        return state


def interface_view(netns_path: str, ifname: str) -> dict[str, Any]:
    """``container_link_check`` for callers that report rather than fail (CNI CHECK):
    ``{"exists": False, "reason": ...}`` when the interface or its namespace is gone."""
    try:
        return {"exists": True, **container_link_check(netns_path, ifname)}
    except (NotFound, InvalidInput) as exc:
        return {"exists": False, "reason": exc.message}
