"""Rtnetlink requests built as pyroute2 messages and sent several per write.

Why: attaching an endpoint is some twenty small kernel requests (veth, addresses,
neighbours, routes, tc). Through pyroute2's one-call-per-request API each costs about
0.3 ms of Python (an asyncio round through its event loop plus message parsing),
several times what the kernel spends. The requests of one step do not depend on each
other's answers, so they are encoded with pyroute2's own message classes and written
in one ``send`` on a plain rtnetlink socket (``RtnlSocket``), whose answers are read
back the same way: one round trip per step instead of one per request.

The kernel runs every request of a batch even when an earlier one fails; callers undo
a failed step the way they undo any other failure (deleting the veth takes everything
with it). The first error is raised as the agent's exception, naming the step.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .rtnl import IFF_UP, MISSING, NUD_PERMANENT, RT_SCOPE_LINK, RT_TABLE_MAIN, kernel_step

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
REQUEST = NLM_F_REQUEST | NLM_F_ACK

RTPROT_BOOT = 3  # what `ip route add` and pyroute2 put on routes they add
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
NTF_PROXY = 0x08


def message(cls: type, msg_type: int, flags: int, fields: dict[str, int],
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
    return message(ifinfmsg, RTM_NEWLINK, CREATE, {"flags": IFF_UP, "change": IFF_UP}, attrs)


def get_link(name: str) -> Any:
    return message(ifinfmsg, RTM_GETLINK, REQUEST, {}, [("IFLA_IFNAME", name)])


def link_up(index: int) -> Any:
    return message(ifinfmsg, RTM_NEWLINK, REQUEST, {"index": index, "flags": IFF_UP,
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
    return message(ifaddrmsg, RTM_NEWADDR, CREATE,
                {"family": family, "prefixlen": prefixlen, "index": index, "flags": flags},
                attrs)


def permanent_neighbour(index: int, addr: Any, lladdr: str, *, replace: bool = False) -> Any:
    return message(ndmsg, RTM_NEWNEIGH, REPLACE if replace else CREATE,
                {"family": _family(addr), "ifindex": index, "state": NUD_PERMANENT},
                [("NDA_DST", str(addr)), ("NDA_LLADDR", lladdr)])


def proxy_neighbour(index: int, addr: Any) -> Any:
    """An NDP proxy entry: the device answers neighbour solicitations for ``addr``."""
    return message(ndmsg, RTM_NEWNEIGH, CREATE,
                {"family": _family(addr), "ifindex": index, "flags": NTF_PROXY},
                [("NDA_DST", str(addr))])


def host_route(index: int, addr: Any, *, scope_link: bool = False) -> Any:
    """A /32 or /128 route to ``addr`` out of ``index``."""
    family = _family(addr)
    return message(rtmsg, RTM_NEWROUTE, CREATE,
                {"family": family, "dst_len": 32 if family == 2 else 128,
                 "table": RT_TABLE_MAIN, "proto": RTPROT_BOOT, "type": RTN_UNICAST,
                 "scope": RT_SCOPE_LINK if scope_link else RT_SCOPE_UNIVERSE},
                [("RTA_DST", str(addr)), ("RTA_OIF", index)])


def default_route(index: int, gateway: Any) -> Any:
    return message(rtmsg, RTM_NEWROUTE, CREATE,
                {"family": _family(gateway), "dst_len": 0, "table": RT_TABLE_MAIN,
                 "proto": RTPROT_BOOT, "type": RTN_UNICAST, "scope": RT_SCOPE_UNIVERSE},
                [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", index)])


# -- sending ---------------------------------------------------------------------------

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acknowledgements without a copy of the request
NETLINK_EXT_ACK = 11  # ... but with the kernel's own words on a refusal
NLMSG_ERROR = 2
NLMSGERR_ATTR_MSG = 1
_HEADER = struct.Struct("=IHHII")
_ERRNO = struct.Struct("=i")
Refusal = tuple[int, str]  # errno, the kernel's extended-ack message


class RtnlSocket:
    """A plain rtnetlink socket of the namespace it was made in.

    pyroute2 builds and parses the messages; this only writes a batch and reads its
    answers. Going through pyroute2's own socket would run every batch through an
    asyncio event loop, which costs more than the kernel's work here (see
    tests/bench/bench_attach.py).
    """

    def __init__(self, fileno: int | None = None) -> None:
        if fileno is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                      NETLINK_ROUTE)
        else:
            self.sock = socket.socket(fileno=fileno)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtnlSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exchange(self, msgs: Sequence[Any]) -> tuple[dict[int, list[bytes]], dict[int, Refusal]]:
        """Write ``msgs`` at once; per request index, the answers and the refusals
        (errno, the kernel's message). Every request carries NLM_F_ACK, so each one
        ends with exactly one NLMSG_ERROR (0 when done)."""
        first = self._seq + 1
        data = bytearray()
        for msg in msgs:
            self._seq += 1
            msg["header"]["sequence_number"] = self._seq
            msg["header"]["pid"] = 0
            msg.reset()
            msg.encode()
            data += msg.data
        self.sock.send(bytes(data))
        answers: dict[int, list[bytes]] = {}
        errors: dict[int, Refusal] = {}
        pending = len(msgs)
        while pending:
            buf = self.sock.recv(1 << 16)
            off = 0
            while off + _HEADER.size <= len(buf):
                length, kind, _flags, seq, _pid = _HEADER.unpack_from(buf, off)
                if length < _HEADER.size:
                    break
                index = seq - first
                if 0 <= index < len(msgs):
                    if kind == NLMSG_ERROR:
                        pending -= 1
                        err = _ERRNO.unpack_from(buf, off + _HEADER.size)[0]
                        if err:
                            errors[index] = (-err, _ext_ack_message(buf, off, length))
                    else:
                        answers.setdefault(index, []).append(bytes(buf[off:off + length]))
                off += (length + 3) & ~3
        return answers, errors


def _ext_ack_message(buf: bytes, off: int, length: int) -> str:
    """NLMSGERR_ATTR_MSG of an error (after errno and the request's header)."""
    pos, end = off + _HEADER.size + 4 + _HEADER.size, off + length
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, pos)
        if alen < 4:
            break
        if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
            return bytes(buf[pos + 4:pos + alen]).split(b"\0", 1)[0].decode(errors="replace")
        pos += (alen + 3) & ~3
    return ""


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

    def send(self, sock: RtnlSocket) -> list[Any]:
        """Send every request in one write; return the link messages that GETLINK
        requests brought back, decoded, in request order. The first refusal is raised as
        the agent's exception (see ``kernel_step``), naming the step and the request."""
        if not self.msgs:
            return []
        answers, errors = sock.exchange(self.msgs)
        if errors:
            index = min(errors)
            with kernel_step(f"{self.what}: {self.labels[index]}"):
                raise _refused(errors[index])
        return [_decode_link(raw) for index in sorted(answers) for raw in answers[index]
                if _HEADER.unpack_from(raw)[1] == RTM_NEWLINK]


def _refused(refusal: Refusal) -> NetlinkError:
    code, detail = refusal
    return NetlinkError(code, os.strerror(code) + (f" ({detail})" if detail else ""))


def _decode_link(raw: bytes) -> Any:
    msg = ifinfmsg(raw)
    msg.decode()
    return msg


def lookup_link(sock: RtnlSocket, name: str) -> Any | None:
    """The link message of ``name``, None when there is no such link."""
    answers, errors = sock.exchange([get_link(name)])
    if errors:
        if errors[0][0] in MISSING:
            return None
        raise _refused(errors[0])
    return _decode_link(answers[0][0])


def delete_link(sock: RtnlSocket, index: int, name: str) -> bool:
    """Delete a link; False when it was gone already."""
    _answers, errors = sock.exchange([message(ifinfmsg, RTM_DELLINK, REQUEST,
                                              {"index": index}, [])])
    if errors:
        if errors[0][0] in MISSING:
            return False
        with kernel_step(f"deleting {name}"):
            raise _refused(errors[0])
    return True
