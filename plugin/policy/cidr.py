"""CIDR selectors (``fromCIDR``, ``fromCIDRSet`` and their ``to`` twins).

The datapath only knows identities, so a CIDR rule works through CIDR identities: the
agent gives each prefix that rules name (cidrs and excepts alike) an identity labelled
``cidr:<prefix>``, and the address cache maps addresses to them by longest prefix. A
rule then selects an identity when the identity's prefix lies inside the rule's cidr
and inside none of its excepts. Because excepts get identities of their own, longest
prefix match hands excepted addresses an identity the rule does not select.

``reserved:world`` (addresses that no prefix covers) counts as the whole address space
(``0.0.0.0/0`` and ``::/0``), so a rule for a ``/0`` without excepts covering it
selects it, as Cilium does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cilium_py.labels import IPNetwork, LabelSet, cidr_prefix, reserved_label

_WORLD = reserved_label("world")
_WORLD_PREFIXES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CIDRRule:
    """A prefix with optional excepted sub-prefixes (``{"cidr", "except"}``)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def selects_prefix(self, prefix: IPNetwork) -> bool:
        """True when ``prefix`` lies inside the cidr and inside none of the excepts."""
        if not _inside(prefix, self.cidr):
            return False
        return not any(_inside(prefix, exc) for exc in self.excepts)

    def selects(self, labels: LabelSet) -> bool:
        """True when the identity with ``labels`` is selected (see the module doc)."""
        prefix = cidr_prefix(labels)
        if prefix is not None:
            return self.selects_prefix(prefix)
        if _WORLD in labels:
            return any(self.selects_prefix(p) for p in _WORLD_PREFIXES)
        return False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": str(self.cidr)}
        if self.excepts:
            out["except"] = [str(e) for e in self.excepts]
        return out

    def __str__(self) -> str:
        if not self.excepts:
            return str(self.cidr)
        return f"{self.cidr} except {', '.join(str(e) for e in self.excepts)}"


def prefixes_needing_identities(cidr_rules: Iterable[CIDRRule]) -> list[IPNetwork]:
    """Every cidr and except prefix, deduplicated and sorted (v4 first).

    The agent allocates one CIDR identity per prefix listed here.
    """
    found: set[IPNetwork] = set()
    for rule in cidr_rules:
        found.add(rule.cidr)
        found.update(rule.excepts)
    return sorted(found, key=lambda n: (n.version, n.network_address.packed, n.prefixlen))
