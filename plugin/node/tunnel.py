"""The VXLAN device of the overlay, in metadata ("external") mode.

One device serves every remote node: the endpoint programs choose the remote end per
packet (bpf_skb_set_tunnel_key), so the device has no fixed peer and learns nothing.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from ..errors import Conflict
from ..logs import get_logger

log = get_logger("node")

DEFAULT_TUNNEL_DEVICE = "cilium_vxlan"
DEFAULT_VXLAN_PORT = 8472  # Linux's and Cilium's VXLAN port, not IANA's 4789
VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet header


def ensure_vxlan(name: str = DEFAULT_TUNNEL_DEVICE, port: int = DEFAULT_VXLAN_PORT) -> int:
    """Create the device (or keep the one a previous agent made); returns its ifindex."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            msg = ipr.get_links(found[0])[0]
            info = msg.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            if kind != "vxlan":
                raise Conflict(f"{name} exists and is a {kind or 'non-vxlan'} device")
            index = found[0]
        else:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_collect_metadata=1,
                     vxlan_learning=0, vxlan_port=port)
            index = ipr.link_lookup(ifname=name)[0]
            log.info("tunnel device created", extra={"fields": {"device": name, "port": port}})
        ipr.link("set", index=index, state="up")
        return index


def remove_vxlan(name: str = DEFAULT_TUNNEL_DEVICE) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])
