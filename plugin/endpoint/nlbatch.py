"""Rtnetlink requests built as pyroute2 messages and sent several per write.

Why: attaching an endpoint is some twenty small kernel requests (veth, addresses,
neighbours, routes, tc). Through pyroute2's one-call-per-request API each costs about
0.3 ms of Python (an asyncio round through its event loop plus message parsing),
several times what the kernel spends. The requests of one step do not depend on each
other's answers, so they are encoded with pyroute2's own message classes and handed to
its ``nlm_request_batch``, which writes them in one ``send`` and collects the answers:
one round trip per step instead of one per request.

The kernel runs every request of a batch even when an earlier one fails; callers undo
a failed step the way they undo any other failure (deleting the veth takes everything
with it). The first error is raised as the agent's exception, naming the step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWQDISC,
    RTM_NEWROUTE,
    RTM_NEWTFILTER,
)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from .netlink import IFF_UP, NUD_PERMANENT, RT_SCOPE_LINK, RT_TABLE_MAIN, kernel_step

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
REQUEST = NLM_F_REQUEST | NLM_F_ACK

RTPROT_BOOT = 3  # what `ip route add` and pyroute2 put on routes they add
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
NTF_PROXY = 0x08
TC_H_CLSACT = 0xFFFFFFF1
CLSACT_HANDLE = 0xFFFF0000
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003


def _msg(cls: type, msg_type: int, flags: int, fields: dict[str, int],
         attrs: list[tuple[str, Any]]) -> Any:
    msg = cls()
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    return msg


def _family(addr: Any) -> int:
    return 2 if ipaddress.ip_address(str(addr)).version == 4 else 10


# -- links -------------------------------------------------------------------------


def new_veth(host_name: str, peer_name: str, peer_netns_fd: int | None = None,
             mtu: int | None = None) -> Any:
    """A veth pair with the host end up; the peer is made in ``peer_netns_fd`` (when
    given) under its final name, so it never sits half-configured on the host."""
    peer: list[tuple[str, Any]] = [("IFLA_IFNAME", peer_name)]
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", host_name)]
    if peer_netns_fd is not None:
        peer.append(("IFLA_NET_NS_FD", peer_netns_fd))
    if mtu is not None:
        peer.append(("IFLA_MTU", mtu))
        attrs.append(("IFLA_MTU", mtu))
    attrs.append(("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "veth"),
        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]}),
    ]}))
    return _msg(ifinfmsg, RTM_NEWLINK, CREATE, {"flags": IFF_UP, "change": IFF_UP}, attrs)


def get_link(name: str) -> Any:
    return _msg(ifinfmsg, RTM_GETLINK, REQUEST, {}, [("IFLA_IFNAME", name)])


def link_up(index: int) -> Any:
    return _msg(ifinfmsg, RTM_NEWLINK, REQUEST, {"index": index, "flags": IFF_UP,
                                                 "change": IFF_UP}, [])


# -- addresses, neighbours, routes ---------------------------------------------------


def add_address(index: int, addr: Any, prefixlen: int) -> Any:
    """A host address; IPv6 ones without duplicate address detection (the pair is
    point to point and nobody else can hold the address)."""
    text = str(addr)
    family = _family(text)
    flags = IFA_F_NODAD if family == 10 else 0
    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", text), ("IFA_ADDRESS", text)]
    if family == 10:
        attrs = [("IFA_ADDRESS", text)]
    return _msg(ifaddrmsg, RTM_NEWADDR, CREATE,
                {"family": family, "prefixlen": prefixlen, "index": index, "flags": flags},
                attrs)


def permanent_neighbour(index: int, addr: Any, lladdr: str, *, replace: bool = False) -> Any:
    return _msg(ndmsg, RTM_NEWNEIGH, REPLACE if replace else CREATE,
                {"family": _family(addr), "ifindex": index, "state": NUD_PERMANENT},
                [("NDA_DST", str(addr)), ("NDA_LLADDR", lladdr)])


def proxy_neighbour(index: int, addr: Any) -> Any:
    """An NDP proxy entry: the device answers neighbour solicitations for ``addr``."""
    return _msg(ndmsg, RTM_NEWNEIGH, CREATE,
                {"family": _family(addr), "ifindex": index, "flags": NTF_PROXY},
                [("NDA_DST", str(addr))])


def host_route(index: int, addr: Any, *, scope_link: bool = False) -> Any:
    """A /32 or /128 route to ``addr`` out of ``index``."""
    family = _family(addr)
    return _msg(rtmsg, RTM_NEWROUTE, CREATE,
                {"family": family, "dst_len": 32 if family == 2 else 128,
                 "table": RT_TABLE_MAIN, "proto": RTPROT_BOOT, "type": RTN_UNICAST,
                 "scope": RT_SCOPE_LINK if scope_link else RT_SCOPE_UNIVERSE},
                [("RTA_DST", str(addr)), ("RTA_OIF", index)])


def default_route(index: int, gateway: Any) -> Any:
    return _msg(rtmsg, RTM_NEWROUTE, CREATE,
                {"family": _family(gateway), "dst_len": 0, "table": RT_TABLE_MAIN,
                 "proto": RTPROT_BOOT, "type": RTN_UNICAST, "scope": RT_SCOPE_UNIVERSE},
                [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", index)])


# -- tc --------------------------------------------------------------------------------


def replace_clsact(index: int) -> Any:
    """clsact on ``index``; an existing clsact stays, with its filters."""
    return _msg(tcmsg, RTM_NEWQDISC, REPLACE,
                {"index": index, "handle": CLSACT_HANDLE, "parent": TC_H_CLSACT},
                [("TCA_KIND", "clsact")])


def replace_bpf_filter(index: int, parent: int, prog_fd: int, name: str, *,
                       prio: int, handle: int) -> Any:
    """A direct-action cls_bpf filter, replaced in place when one is at prio/handle."""
    info = (prio << 16) | int.from_bytes(ETH_P_ALL.to_bytes(2, "big"), "little")
    return _msg(tcmsg, RTM_NEWTFILTER, REPLACE,
                {"index": index, "handle": handle, "parent": parent, "info": info},
                [("TCA_KIND", "bpf"), ("TCA_OPTIONS", {"attrs": [
                    ("TCA_BPF_CLASSID", 1), ("TCA_BPF_FD", prog_fd), ("TCA_BPF_NAME", name),
                    ("TCA_BPF_FLAGS", TCA_BPF_FLAG_ACT_DIRECT)]})])


# -- sending ---------------------------------------------------------------------------


class Batch:
    """Requests for one step, each with a label naming it in errors."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.msgs: list[Any] = []
        self.labels: list[str] = []

    def add(self, label: str, msg: Any) -> Batch:
        self.labels.append(label)
        self.msgs.append(msg)
        return self

    def send(self, ipr: IPRoute) -> list[Any]:
        """Send every request in one write; return the answers (link messages for
        GETLINK, acknowledgements otherwise). The first refusal is raised as the
        agent's exception (see ``kernel_step``), naming the step and the request."""
        if not self.msgs:
            return []
        answers: list[Any] = []

        async def collect() -> None:
            async for answer in ipr.asyncore.nlm_request_batch(self.msgs):
                answers.append(answer)

        try:
            # What IPRoute.nlm_request_batch runs, keeping the answers that arrived
            # before a refusal so that the refused request can be named.
            ipr._run_with_cleanup(collect)
        except NetlinkError as exc:
            answered = {a["header"]["sequence_number"] for a in answers}
            failed = next((label for label, msg in zip(self.labels, self.msgs, strict=True)
                           if msg["header"]["sequence_number"] not in answered), "")
            with kernel_step(f"{self.what}: {failed}" if failed else self.what):
                raise exc from None
        return answers


def links_in(answers: Sequence[Any]) -> list[Any]:
    """The link messages among a batch's answers, in request order."""
    return [msg for msg in answers if msg["header"]["type"] == RTM_NEWLINK]

