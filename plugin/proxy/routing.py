"""The node's routing for redirected flows: marked packets are delivered locally.

``ip rule fwmark MARK_TO_PROXY/MARK_MAGIC_MASK lookup 2004`` and ``local 0.0.0.0/0
dev lo`` (and ``::/0``) in table 2004, in the agent's own network namespace (tests run
agents in node namespaces; the main table is never touched). Idempotent; kept across
agent restarts like the programs that mark the packets.
"""

from __future__ import annotations

import subprocess

from .marks import MARK_MAGIC_MASK, MARK_TO_PROXY, PROXY_ROUTE_TABLE, PROXY_RULE_PRIORITY


class RoutingError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise RoutingError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def install_proxy_routing(ipv4: bool = True, ipv6: bool = True) -> None:
    mark = f"{MARK_TO_PROXY:#x}/{MARK_MAGIC_MASK:#x}"
    for fam, on, dst in (("-4", ipv4, "0.0.0.0/0"), ("-6", ipv6, "::/0")):
        if not on:
            continue
        if f"lookup {PROXY_ROUTE_TABLE}" not in _ip(fam, "rule", "show"):
            _ip(fam, "rule", "add", "fwmark", mark, "lookup", str(PROXY_ROUTE_TABLE),
                "pref", str(PROXY_RULE_PRIORITY))
        _ip(fam, "route", "replace", "local", dst, "dev", "lo", "table",
            str(PROXY_ROUTE_TABLE))


def remove_proxy_routing() -> None:
    mark = f"{MARK_TO_PROXY:#x}/{MARK_MAGIC_MASK:#x}"
    for fam in ("-4", "-6"):
        _ip(fam, "rule", "del", "fwmark", mark, "lookup", str(PROXY_ROUTE_TABLE), check=False)
        _ip(fam, "route", "flush", "table", str(PROXY_ROUTE_TABLE), check=False)
