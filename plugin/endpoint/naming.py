"""Interface names: the host side of an endpoint's veth, and checks on names callers give.

The host-side name is derived from the endpoint id alone (not stored anywhere), so a
restarted agent finds the veth of every endpoint it restores, and an orphan sweep
can tell ours (``lxc`` prefix) from everything else on the host.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import InvalidInput

IFNAMSIZ = 16  # the kernel's buffer, including the terminating NUL
MAX_IFNAME = IFNAMSIZ - 1
HOST_PREFIX = "lxc"

# The kernel accepts almost any byte; we accept what every tool (ip, iptables, tc,
# sysctl paths under /proc/sys/net/.../conf/<name>) handles without quoting.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def host_ifname(endpoint_id: str, prefix: str = HOST_PREFIX) -> str:
    """``lxc`` + a hex digest of the endpoint id, 15 characters, stable forever.

    Twelve hex digits (48 bits) keep accidental collisions out of reach for any
    number of endpoints one node can hold.
    """
    if not endpoint_id:
        raise InvalidInput("an endpoint id is needed to name its interface")
    if len(prefix) >= MAX_IFNAME - 4:
        raise InvalidInput(f"interface prefix {prefix!r} is too long")
    digest = hashlib.sha256(endpoint_id.encode()).hexdigest()
    return prefix + digest[: MAX_IFNAME - len(prefix)]


def check_ifname(name: str, what: str = "interface name") -> str:
    """Return ``name`` if the kernel and our tools accept it; InvalidInput naming the
    problem otherwise."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} is empty", {"interface-name": str(name)})
    if len(name) > MAX_IFNAME:
        raise InvalidInput(
            f"{what} {name!r} is too long: {len(name)} characters, at most {MAX_IFNAME}",
            {"interface-name": name},
        )
    if name in {".", ".."} or not _IFNAME_RE.match(name):
        raise InvalidInput(
            f"{what} {name!r} has characters an interface name cannot have "
            "(use letters, digits, '_', '-', '.')",
            {"interface-name": name},
        )
    return name
