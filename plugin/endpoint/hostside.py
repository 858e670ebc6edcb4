"""Endpoints for libnetwork: the container end is left for dockerd to move.

Docker's remote-driver protocol hands dockerd an interface *in the host namespace*
(``SrcName``), which dockerd moves into the sandbox, renames and addresses itself. So
here the agent only makes the veth pair, keeps the host end's side (routes, permanent
neighbours, BPF) and leaves the peer under a temporary name. Since dockerd cannot add
the permanent gateway neighbour that CNI endpoints get, the host end answers for the
router addresses instead: proxy ARP for IPv4 and a proxy NDP entry for IPv6.
"""

from __future__ import annotations

import hashlib
import ipaddress

from pyroute2 import IPRoute

from ..errors import Conflict, NotFound
from .naming import host_ifname
from .netlink import find_link, kernel_step
from .plumbing import LinkInfo, configure_host_side, write_sysctl


def container_tmp_ifname(endpoint_id: str) -> str:
    """The peer's name until dockerd renames it; stable so retries find it."""
    return "tmp" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:11]


def create_docker_link(
    endpoint_id: str,
    ipv4: str | None,
    ipv6: str | None,
    gw6: str | None,
) -> tuple[LinkInfo, str]:
    """Make the pair; returns the host end's info and the peer's temporary name."""
    host_name = host_ifname(endpoint_id)
    peer_name = container_tmp_ifname(endpoint_id)
    with IPRoute() as ipr:
        for name in (host_name, peer_name):
            if find_link(ipr, name) is not None:
                raise Conflict(f"interface {name} of endpoint {endpoint_id} exists already",
                               {"host-interface": name})
        with kernel_step(f"creating veth {host_name} <-> {peer_name}"):
            ipr.link("add", ifname=host_name, kind="veth", peer=peer_name)
        host = find_link(ipr, host_name)
        peer = find_link(ipr, peer_name)
        if host is None or peer is None:  # pragma: no cover - deleted under our feet
            raise NotFound(f"veth {host_name} vanished right after it was created")
        index = host["index"]
        try:
            info = LinkInfo.from_links(host, peer, peer_name)
            with kernel_step(f"setting {host_name} up"):
                ipr.link("set", index=index, state="up")
            write_sysctl(f"/proc/sys/net/ipv4/conf/{host_name}/proxy_arp", "1")
            configure_host_side(ipr, info, ipv4, ipv6)
            if ipv6 is not None and gw6 is not None:
                write_sysctl(f"/proc/sys/net/ipv6/conf/{host_name}/proxy_ndp", "1")
                with kernel_step(f"proxying NDP for {gw6} on {host_name}"):
                    ipr.neigh("add", dst=ipaddress.ip_address(gw6).compressed,
                              ifindex=index, flags=0x08)  # NTF_PROXY
            return info, peer_name
        except BaseException:
            with kernel_step(f"removing {host_name}"):
                ipr.link("del", index=index)
            raise
