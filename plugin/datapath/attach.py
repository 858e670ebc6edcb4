"""Attach BPF programs to a device with tc clsact in direct-action mode.

Why clsact + direct-action: clsact gives one hook on ingress and one on egress
without a queueing discipline in the way, and direct-action lets the program's
return value be the verdict (pass, drop, redirect) instead of a class id.

Why *replace* with a fixed priority and handle: the filter is then updated in
place, atomically, when a newer program is attached (agent restart, option
change). A delete followed by an add would leave a window in which packets run
through no program at all.

Everything here works on the network namespace the calling thread is in, through
a pyroute2 ``IPRoute`` socket that the caller may pass in (and keep open).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, RTM_NEWTFILTER
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from ..netlink import nlbatch

Direction = Literal["ingress", "egress"]

# clsact's pseudo parents, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_{INGRESS,EGRESS}).
PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
CLSACT_HANDLE = 0xFFFF0000
TC_H_CLSACT = 0xFFFFFFF1
ETH_P_ALL = 0x0003
TCA_BPF_FLAG_ACT_DIRECT = 1

DEFAULT_PRIO = 1
DEFAULT_HANDLE = 1

_TCA_BPF_ID = 11  # pyroute2 0.9 does not decode the attached program's id
_ENOENT = 2
_EINVAL = 22
_EEXIST = 17
_ENODEV = 19


@dataclass(frozen=True)
class AttachedFilter:
    """One bpf filter as the kernel reports it."""

    direction: Direction
    prio: int
    handle: int
    name: str
    direct_action: bool
    prog_id: int | None


def has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    for qdisc in ipr.get_qdiscs(index=ifindex):
        if qdisc.get_attr("TCA_KIND") == "clsact":
            return True
    return False


def ensure_clsact(ipr: IPRoute, ifindex: int) -> bool:
    """Add the clsact qdisc unless present; True when this call created it.

    Adding and taking EEXIST is one round trip; asking first would dump the qdiscs
    of every device, a cost that grows with the number of endpoints.
    """
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code == _EEXIST:  # raced with someone else adding it
            return False
        raise
    return True


def remove_clsact(ipr: IPRoute, ifindex: int) -> None:
    """Remove clsact and with it every filter on both hooks (idempotent)."""
    try:
        ipr.tc("del", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code not in (_ENOENT, _EINVAL, _ENODEV):
            raise


def attach_program(
    ipr: IPRoute,
    ifindex: int,
    direction: Direction,
    prog_fd: int,
    name: str,
    *,
    prio: int = DEFAULT_PRIO,
    handle: int = DEFAULT_HANDLE,
) -> None:
    """Attach (or atomically replace) the direct-action filter at ``prio``/``handle``."""
    ensure_clsact(ipr, ifindex)
    ipr.tc(
        "replace-filter",
        "bpf",
        ifindex,
        handle,
        fd=prog_fd,
        name=name,
        parent=PARENT[direction],
        classid=1,
        direct_action=True,
        prio=prio,
        protocol=ETH_P_ALL,
    )


def attach_programs(
    sock: nlbatch.RtnlSocket,
    ifindex: int,
    programs: dict[Direction, tuple[int, str]],
    *,
    prio: int = DEFAULT_PRIO,
    handle: int = DEFAULT_HANDLE,
) -> None:
    """``attach_program`` for both hooks at once: clsact (``replace`` keeps an existing
    one and its filters) and the filters go to the kernel in one write, which is what
    attaching an endpoint costs, instead of three round trips."""
    batch = nlbatch.Batch(f"attaching programs to ifindex {ifindex}")
    # replace: an existing clsact stays, with its filters.
    batch.add("clsact", nlbatch.message(
        tcmsg, RTM_NEWQDISC, nlbatch.REPLACE,
        {"index": ifindex, "handle": CLSACT_HANDLE, "parent": TC_H_CLSACT},
        [("TCA_KIND", "clsact")]))
    # The protocol in network byte order below the priority, as tc(8) encodes it.
    info = (prio << 16) | socket.htons(ETH_P_ALL)
    for direction, (prog_fd, name) in programs.items():
        batch.add(f"{direction} filter", nlbatch.message(
            tcmsg, RTM_NEWTFILTER, nlbatch.REPLACE,
            {"index": ifindex, "handle": handle, "parent": PARENT[direction], "info": info},
            [("TCA_KIND", "bpf"), ("TCA_OPTIONS", {"attrs": [
                ("TCA_BPF_CLASSID", 1), ("TCA_BPF_FD", prog_fd), ("TCA_BPF_NAME", name),
                ("TCA_BPF_FLAGS", TCA_BPF_FLAG_ACT_DIRECT)]})]))
    batch.send(sock)


def detach_program(
    ipr: IPRoute,
    ifindex: int,
    direction: Direction,
    *,
    prio: int = DEFAULT_PRIO,
    handle: int = DEFAULT_HANDLE,
) -> bool:
    """Delete our filter; False when it (or the device, or clsact) was not there."""
    try:
        ipr.tc(
            "del-filter",
            "bpf",
            ifindex,
            handle,
            parent=PARENT[direction],
            prio=prio,
            protocol=ETH_P_ALL,
        )
    except NetlinkError as exc:
        if exc.code in (_ENOENT, _EINVAL, _ENODEV):
            return False
        raise
    return True


def _prog_id_from_options(options: object) -> int | None:
    """Dig TCA_BPF_ID out of the raw TCA_OPTIONS attribute pyroute2 leaves undecoded."""
    data = getattr(options, "data", None)
    offset = getattr(options, "offset", None)
    length = getattr(options, "length", None)
    if data is None or offset is None or not length:
        return None
    pos, end = offset + 4, offset + length
    while pos + 4 <= end:
        nla_len, nla_type = struct.unpack_from("=HH", data, pos)
        if nla_len < 4:
            break
        if nla_type & 0x3FFF == _TCA_BPF_ID and nla_len >= 8:
            return int(struct.unpack_from("=I", data, pos + 4)[0])
        pos += (nla_len + 3) & ~3
    return None


def list_filters(ipr: IPRoute, ifindex: int, direction: Direction) -> list[AttachedFilter]:
    """The bpf filters on one clsact hook; empty when there is no clsact."""
    try:
        msgs = ipr.get_filters(index=ifindex, parent=PARENT[direction])
    except NetlinkError as exc:
        if exc.code in (_ENOENT, _EINVAL, _ENODEV):
            return []
        raise
    out: list[AttachedFilter] = []
    for msg in msgs:
        if msg.get_attr("TCA_KIND") != "bpf":
            continue
        options = msg.get_attr("TCA_OPTIONS")
        if options is None:  # the per-priority chain header, not a filter
            continue
        flags = options.get_attr("TCA_BPF_FLAGS") or 0
        out.append(
            AttachedFilter(
                direction=direction,
                prio=msg["info"] >> 16,
                handle=msg["handle"],
                name=options.get_attr("TCA_BPF_NAME") or "",
                direct_action=bool(flags & 1),
                prog_id=_prog_id_from_options(options),
            )
        )
    return out
