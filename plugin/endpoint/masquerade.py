"""Masquerading of endpoint traffic that leaves the node, with iptables.

Endpoint addresses come from node-local pools that the rest of the network has no
route to, so traffic to anything outside the pools is source-NATed to the node's
address on the way out (replies are un-NATed by conntrack). The agent owns two
chains, clearly named, and one jump into each from the built-in chains:

- nat ``CILIUM_PY_POSTROUTING`` (from POSTROUTING): ``-s POOL ! -d POOL -j MASQUERADE``
- filter ``CILIUM_PY_FORWARD`` (from FORWARD): ``-s POOL -j ACCEPT``, ``-d POOL -j
  ACCEPT``, because dockerd sets the FORWARD policy to DROP.

The chains' contents are replaced atomically with ``iptables-restore --noflush``
(no moment without rules when the agent restarts), the jumps are inserted first
in their chains only when missing, and ``remove`` deletes exactly these jumps and
chains. Everything happens in the current network namespace only. Any backend of
the ``iptables`` command works (Debian's default is iptables-nft).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInput, Unavailable
from ..netlink.rtnl import PlumbingError

NAT_CHAIN = "CILIUM_PY_POSTROUTING"
FORWARD_CHAIN = "CILIUM_PY_FORWARD"
COMMENT = "cilium-py"

_TOOLS = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}
_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Jump:
    table: str
    parent: str
    chain: str

    def spec(self) -> list[str]:
        return ["-m", "comment", "--comment", COMMENT, "-j", self.chain]


_JUMPS = (_Jump("nat", "POSTROUTING", NAT_CHAIN), _Jump("filter", "FORWARD", FORWARD_CHAIN))


class Masquerade:
    """The agent's masquerade and forward rules for its pools.

    ``ipv4_pool`` / ``ipv6_pool`` (None: that family is off) are the node's pools;
    ``no_masquerade_to`` lists destinations reached without NAT (for example the
    pools of the other nodes of a cluster, which route to each other directly).
    """

    def __init__(
        self,
        ipv4_pool: str | None,
        ipv6_pool: str | None,
        no_masquerade_to: Sequence[str] = (),
    ) -> None:
        self.pools: dict[int, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
        for family, text in ((4, ipv4_pool), (6, ipv6_pool)):
            if text is not None:
                self.pools[family] = _network(text, family)
        self.exclude = [_network(text, None) for text in no_masquerade_to]

    def install(self) -> None:
        """Add or refresh the rules; running it again changes nothing."""
        for family, pool in self.pools.items():
            iptables, restore = _tools(family)
            excluded = [n for n in self.exclude if n.version == family]
            _run([restore, "-w", "--noflush"], stdin=_ruleset(pool, excluded))
            for jump in _JUMPS:
                if not _has_jump(iptables, jump):
                    _run([iptables, "-w", "-t", jump.table, "-I", jump.parent, "1", *jump.spec()])

    def remove(self) -> None:
        """Delete the jumps and chains ``install`` made, in both families; harmless
        when they are gone. Other rules (dockerd's, the admin's) are never touched."""
        for family in (4, 6):
            iptables = shutil.which(_TOOLS[family][0])
            if iptables is None:
                continue  # without the tool nothing can have been installed
            for jump in _JUMPS:
                while _has_jump(iptables, jump):
                    _run([iptables, "-w", "-t", jump.table, "-D", jump.parent, *jump.spec()])
                if _has_chain(iptables, jump):
                    _run([iptables, "-w", "-t", jump.table, "-F", jump.chain])
                    _run([iptables, "-w", "-t", jump.table, "-X", jump.chain])

    def installed(self) -> dict[str, dict[str, bool]]:
        """Per family and chain, whether the chain and its jump exist (for status)."""
        result: dict[str, dict[str, bool]] = {}
        for family in self.pools:
            iptables, _ = _tools(family)
            for jump in _JUMPS:
                result.setdefault(f"ipv{family}", {})[jump.chain] = _has_chain(
                    iptables, jump
                ) and _has_jump(iptables, jump)
        return result


def _ruleset(
    pool: ipaddress.IPv4Network | ipaddress.IPv6Network,
    excluded: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The iptables-restore input that (re)defines both chains' contents."""
    comment = f'-m comment --comment "{COMMENT}"'
    lines = ["*nat", f":{NAT_CHAIN} - [0:0]"]
    lines += [f"-A {NAT_CHAIN} -s {pool} -d {net} {comment} -j RETURN" for net in excluded]
    lines += [
        f"-A {NAT_CHAIN} -s {pool} ! -d {pool} {comment} -j MASQUERADE",
        "COMMIT",
        "*filter",
        f":{FORWARD_CHAIN} - [0:0]",
        f"-A {FORWARD_CHAIN} -s {pool} {comment} -j ACCEPT",
        f"-A {FORWARD_CHAIN} -d {pool} {comment} -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def _tools(family: int) -> tuple[str, str]:
    found = [shutil.which(tool) for tool in _TOOLS[family]]
    if None in found:
        missing = " and ".join(t for t, p in zip(_TOOLS[family], found, strict=True) if not p)
        raise Unavailable(
            f"{missing} not found: masquerading IPv{family} endpoint traffic needs the "
            "iptables package (Debian/Ubuntu: apt-get install iptables)"
        )
    return found[0], found[1]  # type: ignore[return-value]


def _has_jump(iptables: str, jump: _Jump) -> bool:
    cmd = [iptables, "-w", "-t", jump.table, "-C", jump.parent, *jump.spec()]
    return _run(cmd, check=False).returncode == 0


def _has_chain(iptables: str, jump: _Jump) -> bool:
    cmd = [iptables, "-w", "-t", jump.table, "-S", jump.chain]
    return _run(cmd, check=False).returncode == 0


def _run(
    cmd: list[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlumbingError(f"{' '.join(cmd)} failed: {exc}") from None
    if check and proc.returncode != 0:
        raise PlumbingError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _network(text: str, family: int | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(str(text), strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid prefix {text!r}: {exc}") from None
    if family is not None and net.version != family:
        raise InvalidInput(f"{text} is not an IPv{family} prefix")
    return net
