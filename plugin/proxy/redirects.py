"""Redirect entries: the part of every endpoint's resolved policy a proxy enforces.

Pure: built from :class:`cilium_py.policy.ResolvedPolicy` objects, consumed by the
proxies' config writers. The resolver's entries are closed under intersection (the
most specific key a connection hits holds the union of every rule covering it), so a
proxy may simply allow a request when *any* redirect entry covering its connection
allows it: that is exactly the union of the rules of the entry the datapath hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..policy import Action, L7Rules

INGRESS = "ingress"
EGRESS = "egress"


@dataclass(frozen=True, slots=True, order=True)
class Redirect:
    """One redirect entry of one endpoint: remote ``identity`` (0: any) on
    ``port``/``protocol`` (0: any) in ``direction`` is allowed what ``rules`` allow."""

    endpoint_id: str
    direction: str
    identity: int
    port: int
    protocol: int
    addresses: tuple[str, ...]
    rules: L7Rules

    @property
    def name(self) -> str:
        return f"{self.direction}/{self.endpoint_id}/{self.identity}/{self.port}/{self.protocol}"


def endpoint_redirects(
    endpoint_id: str, addresses: Iterable[str], resolved: Any, parsers: Iterable[str]
) -> list[Redirect]:
    """The redirect entries of one endpoint whose rules need one of ``parsers``."""
    wanted = set(parsers)
    addrs = tuple(sorted(a for a in addresses if a))
    out = []
    for direction, policy in ((INGRESS, resolved.ingress), (EGRESS, resolved.egress)):
        if not policy.enforced:
            continue
        for key, verdict in policy.entries.items():
            if verdict.action is not Action.REDIRECT or verdict.l7 is None:
                continue
            if not wanted & set(verdict.l7.parsers()):
                continue
            out.append(Redirect(endpoint_id, direction, int(key.identity), int(key.port),
                                int(key.protocol), addrs, verdict.l7))
    return sorted(out)


def all_redirects(
    resolved: Mapping[str, Any], addresses: Mapping[str, Iterable[str]], parsers: Iterable[str]
) -> list[Redirect]:
    parsers = tuple(parsers)
    out: list[Redirect] = []
    for ep_id, policy in sorted(resolved.items()):
        out.extend(endpoint_redirects(ep_id, addresses.get(ep_id, ()), policy, parsers))
    return out


def with_proxy_ports(resolved: Any, proxy_port: Callable[[str, str], int]) -> Any:
    """``resolved`` with the proxy port of its parser and direction on every redirect
    verdict (what the datapath's redirect entries carry)."""
    changed = {}
    for direction, policy in ((INGRESS, resolved.ingress), (EGRESS, resolved.egress)):
        entries = {}
        for key, verdict in policy.entries.items():
            if verdict.action is Action.REDIRECT and verdict.l7 is not None:
                parsers = verdict.l7.parsers()
                if parsers:
                    verdict = dataclasses.replace(
                        verdict, proxy_port=proxy_port(parsers[0], direction))
            entries[key] = verdict
        changed[direction] = dataclasses.replace(policy, entries=entries)
    return dataclasses.replace(resolved, ingress=changed[INGRESS], egress=changed[EGRESS])


def redirected_ports(resolved: Any | None) -> set[tuple[str, int]]:
    """(direction, port) pairs with a redirect entry (port 0: every port)."""
    if resolved is None:
        return set()
    out = set()
    for direction, policy in ((INGRESS, resolved.ingress), (EGRESS, resolved.egress)):
        if not policy.enforced:
            continue
        for key, verdict in policy.entries.items():
            if verdict.action is Action.REDIRECT:
                out.add((direction, int(key.port)))
    return out
