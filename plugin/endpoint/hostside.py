"""Endpoints for libnetwork: the container end is left for dockerd to move.

Docker's remote-driver protocol hands dockerd an interface *in the host namespace*
(``SrcName``), which dockerd moves into the sandbox, renames and addresses itself. So
here the agent only makes the veth pair, keeps the host end's side (routes, permanent
neighbours, BPF) and leaves the peer under a temporary name. Since dockerd cannot add
the permanent gateway neighbour that CNI endpoints get, the host end answers for the
router addresses instead: proxy ARP for IPv4 and a proxy NDP entry for IPv6, answered
without the kernel's default proxy delay.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from ..errors import Conflict
from ..netlink import nlbatch
from .naming import host_ifname
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
    with nlbatch.RtnlSocket() as sock:
        # One write: the pair with the host end up, then both ends' indexes and MACs.
        try:
            answers = (nlbatch.Batch(f"creating veth {host_name} <-> {peer_name}")
                       .add("veth", nlbatch.new_veth(host_name, peer_name))
                       .add(host_name, nlbatch.get_link(host_name))
                       .add(peer_name, nlbatch.get_link(peer_name))
                       .send(sock))
        except Conflict:
            raise Conflict(f"interface {host_name} or {peer_name} of endpoint {endpoint_id} "
                           "exists already", {"host-interface": host_name}) from None
        host, peer = answers
        index = host["index"]
        try:
            info = LinkInfo.from_links(host, peer, peer_name)
            write_sysctl(f"/proc/sys/net/ipv4/conf/{host_name}/proxy_arp", "1")
            extra: list[tuple[str, Any]] = []
            if ipv6 is not None and gw6 is not None:
                write_sysctl(f"/proc/sys/net/ipv6/conf/{host_name}/proxy_ndp", "1")
                # The kernel answers a proxied solicitation after a random delay of up
                # to proxy_delay (0.8 s by default), which the container's first IPv6
                # packet would wait out: answer at once. (Proxy ARP needs nothing: the
                # router's IPv4 address is local, and local addresses are answered at
                # once.)
                write_sysctl(f"/proc/sys/net/ipv6/neigh/{host_name}/proxy_delay", "0")
                extra.append((f"NDP proxy for {gw6}", nlbatch.proxy_neighbour(
                    index, ipaddress.ip_address(gw6).compressed)))
            configure_host_side(sock, info, ipv4, ipv6, extra)
            return info, peer_name
        except BaseException:
            nlbatch.delete_link(sock, index, host_name)
            raise
