"""Small pyroute2 helpers for the endpoint plumbing and the datapath: decoding, errors.

Kept apart from ``plumbing.py`` so that the functions the agent calls read as a
sequence of steps, and so every kernel error reaches callers as one of the
agent's own exceptions (see ``errors.py``) with a message naming what failed.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CiliumPyError, Conflict, InvalidInput

IFF_UP = 0x1
NUD_PERMANENT = 0x80
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
RT_SCOPE_LINK = 253
AF_INET = 2
AF_INET6 = 10
FAMILY_OF = {AF_INET: 4, AF_INET6: 6}


class PlumbingError(CiliumPyError):
    """The kernel refused a step of the plumbing for a reason the caller cannot fix
    by changing the request (the agent reports it as an internal error)."""

    status = 500
    code = "plumbing"


@contextlib.contextmanager
def kernel_step(what: str) -> Iterator[None]:
    """Turn a netlink error during ``what`` into the agent's exception family."""
    try:
        yield
    except NetlinkError as exc:
        reason = exc.args[1] if len(exc.args) > 1 else str(exc)
        message = f"{what}: {reason}"
        if exc.code == errno.EEXIST:
            raise Conflict(message) from None
        if exc.code in (errno.EINVAL, errno.ERANGE):
            raise InvalidInput(message) from None
        raise PlumbingError(message) from None


# The errors that mean "not there" (already gone, when deleting).
MISSING = frozenset({errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL})


def ignore_missing(exc: NetlinkError) -> bool:
    """True for the errors that mean "already gone" when deleting."""
    return exc.code in MISSING


def find_link(ipr: IPRoute, ifname: str) -> Any | None:
    """The link message for ``ifname`` or None.

    One RTM_GETLINK by name: the kernel looks the name up, so the cost does not grow
    with the number of endpoints (``link_lookup`` would dump and parse every link).
    """
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if ignore_missing(exc):
            return None
        raise


def link_kind(msg: Any) -> str | None:
    return msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))


def link_dict(msg: Any) -> dict[str, Any]:
    """The fields of a link the agent and CNI CHECK care about."""
    return {
        "ifname": msg.get("IFLA_IFNAME"),
        "ifindex": msg["index"],
        "mac": msg.get("IFLA_ADDRESS"),
        "mtu": msg.get("IFLA_MTU"),
        "kind": link_kind(msg),
        "up": bool(msg["flags"] & IFF_UP),
        "operstate": msg.get("IFLA_OPERSTATE"),
        "peer_ifindex": msg.get("IFLA_LINK"),
        "peer_netnsid": msg.get("IFLA_LINK_NETNSID"),
    }


def addresses_of(ipr: IPRoute, index: int) -> list[dict[str, Any]]:
    """Global addresses on a link (link-local ones are the kernel's, not ours)."""
    result = []
    for msg in ipr.addr("dump", index=index):
        if msg["index"] != index or msg["scope"] == RT_SCOPE_LINK:
            continue
        result.append(
            {
                "family": FAMILY_OF.get(msg["family"]),
                "address": msg.get("IFA_ADDRESS"),
                "prefixlen": msg["prefixlen"],
            }
        )
    return result


def routes_via(ipr: IPRoute, index: int) -> list[dict[str, Any]]:
    """Main-table unicast routes out of a link that were added (not derived by the
    kernel from an address)."""
    result = []
    for family in (AF_INET, AF_INET6):
        for msg in ipr.route("dump", family=family):
            if msg.get("RTA_OIF") != index or msg["type"] != RTN_UNICAST:
                continue
            if msg.get("RTA_TABLE", msg["table"]) != RT_TABLE_MAIN:
                continue
            if msg["proto"] == RTPROT_KERNEL:
                continue
            dst = msg.get("RTA_DST")
            if dst is None:
                dst = "0.0.0.0" if family == AF_INET else "::"
            result.append(
                {
                    "family": FAMILY_OF[family],
                    "dst": f"{dst}/{msg['dst_len']}",
                    "gateway": msg.get("RTA_GATEWAY"),
                    "scope": "link" if msg["scope"] == RT_SCOPE_LINK else "global",
                }
            )
    return result


def neighbours_on(ipr: IPRoute, index: int) -> list[dict[str, Any]]:
    result = []
    for family in (AF_INET, AF_INET6):
        for msg in ipr.neigh("dump", family=family):
            if msg["ifindex"] != index or msg.get("NDA_LLADDR") is None:
                continue
            result.append(
                {
                    "family": FAMILY_OF[family],
                    "dst": msg.get("NDA_DST"),
                    "lladdr": msg.get("NDA_LLADDR"),
                    "permanent": bool(msg["state"] & NUD_PERMANENT),
                }
            )
    return result
