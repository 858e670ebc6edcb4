"""Resolve the rules into one endpoint's policy: map entries for the datapath.

Semantics (Cilium 1.0):

- Enforcement per direction: ``always`` on, ``never`` off, ``default`` on once any rule
  selecting the endpoint has a section in that direction (``"egress": [{}]`` alone
  denies all egress).
- Rules only allow; the allowed set is the union over every section of every rule
  selecting the endpoint. A section with peers and no ports allows those peers on all
  ports; with ports, on those ports; ports without peers allow any peer there.
- ``fromRequires``/``toRequires`` narrow: a peer that fails any requirement of any rule
  selecting the endpoint is denied whatever allows it. Wildcard allows are therefore
  expanded into the known identities that pass.
- The host (identity 1) may always reach the endpoint (ingress) unless
  ``allow_host_ingress`` is off.

The output keys are ``(identity, port, protocol, direction)`` with 0 meaning "any" for
identity, port and protocol. The entries are closed under intersection (see
:func:`_close`), so the datapath can look up from the most to the least specific key
and take the first hit, and get the union semantics above:

    (id, port, proto), (id, port, ANY), (id, 0, ANY),
    (0,  port, proto), (0,  port, ANY), (0,  0, ANY)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cilium_py.labels import IPNetwork, LabelSet, ReservedIdentity, cidr_prefix

from .cidr import CIDRRule, prefixes_needing_identities
from .identities import ANY_IDENTITY, IdentityIndex
from .l4 import Protocol
from .l7 import L7Rules
from .rule import Direction, Rule, Section


class EnforcementMode(StrEnum):
    DEFAULT = "default"
    ALWAYS = "always"
    NEVER = "never"


class Action(StrEnum):
    ALLOW = "allow"
    REDIRECT = "redirect"


@dataclass(frozen=True, slots=True, order=True)
class PolicyKey:
    """One map key. ``identity``/``port``/``protocol`` 0 mean any."""

    identity: int
    port: int
    protocol: Protocol
    direction: Direction


@dataclass(frozen=True, slots=True)
class Verdict:
    """Allow, or redirect to the L7 proxy with ``l7`` rules.

    ``ALLOW`` with ``l7`` set means the port has L7 rules but no proxy enforces them
    yet, so the port is enforced at L4 only.
    """

    action: Action
    l7: L7Rules | None = None
    #: the proxy listening for this redirect (set by the agent, 0 until then)
    proxy_port: int = 0

    @property
    def l7_at_l4(self) -> bool:
        return self.action is Action.ALLOW and self.l7 is not None

    def merge(self, other: Verdict) -> Verdict:
        """Union: a plain allow lifts any L7 restriction; two redirects add up."""
        if self.action is Action.REDIRECT and other.action is Action.REDIRECT:
            assert self.l7 is not None and other.l7 is not None
            return Verdict(Action.REDIRECT, self.l7.merge(other.l7),
                           self.proxy_port or other.proxy_port)
        return ALLOW

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": str(self.action)}
        if self.l7 is not None:
            out["l7"] = self.l7.to_dict()
        if self.proxy_port:
            out["proxy_port"] = self.proxy_port
        if self.l7_at_l4:
            out["l7_enforced_at"] = "L4"
        return out


ALLOW = Verdict(Action.ALLOW)


@dataclass(frozen=True, slots=True)
class L7Port:
    """A port that carries L7 rules, and whether a proxy enforces them yet."""

    direction: Direction
    port: int
    protocol: Protocol
    parsers: tuple[str, ...]
    proxied: bool

    def __str__(self) -> str:
        where = "redirected to the proxy" if self.proxied else "enforced at L4 only"
        return (
            f"{self.direction} port {self.port}/{self.protocol.name} has "
            f"{'+'.join(self.parsers)} rules: {where}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "protocol": self.protocol.name,
            "parsers": list(self.parsers),
            "enforced_at": "L7" if self.proxied else "L4",
        }


# (identity, port, protocol) within one direction.
_Key = tuple[int, int, Protocol]


@dataclass(frozen=True)
class DirectionPolicy:
    """The resolved policy of one endpoint in one direction."""

    direction: Direction
    enforced: bool
    entries: Mapping[PolicyKey, Verdict]
    #: indices of the rules that select the endpoint and have sections here
    rules: tuple[int, ...] = ()
    #: CIDR selectors of those rules, as (prefix, excepts)
    cidrs: tuple[tuple[IPNetwork, tuple[IPNetwork, ...]], ...] = ()
    #: prefixes named above that have no CIDR identity among the known identities
    unresolved_cidrs: tuple[IPNetwork, ...] = ()
    #: known identities denied by a fromRequires/toRequires
    denied_by_requirements: frozenset[int] = frozenset()
    l7_ports: tuple[L7Port, ...] = ()

    def lookup(self, identity: int, port: int, protocol: Protocol) -> Verdict | None:
        """What the datapath decides for a new connection; None = denied."""
        if not self.enforced:
            return ALLOW
        for key in _lookup_order(identity, port, Protocol(protocol)):
            verdict = self.entries.get(PolicyKey(*key, self.direction))
            if verdict is not None:
                return verdict
        return None

    def allows(self, identity: int, port: int, protocol: Protocol) -> bool:
        return self.lookup(identity, port, protocol) is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "enforcing": self.enforced,
            "rules": list(self.rules),
            "entries": [
                {
                    "identity": k.identity,
                    "port": k.port,
                    "protocol": k.protocol.name,
                    **v.to_dict(),
                }
                for k, v in sorted(self.entries.items())
            ],
            "cidrs": [{"cidr": str(c), "except": [str(e) for e in ex]} for c, ex in self.cidrs],
            "unresolved_cidrs": [str(c) for c in self.unresolved_cidrs],
            "denied_by_requirements": sorted(self.denied_by_requirements),
            "l7_ports": [p.to_dict() for p in self.l7_ports],
        }


@dataclass(frozen=True)
class ResolvedPolicy:
    """One endpoint's policy in both directions."""

    labels: LabelSet
    ingress: DirectionPolicy
    egress: DirectionPolicy
    revision: int | None = None
    warnings: tuple[str, ...] = field(default=())

    def direction(self, direction: Direction) -> DirectionPolicy:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def entries(self) -> dict[PolicyKey, Verdict]:
        """Both directions' entries, for the map writer."""
        return {**self.ingress.entries, **self.egress.entries}

    @property
    def l7_at_l4(self) -> tuple[L7Port, ...]:
        """Ports whose L7 rules are enforced at L4 only (to log and show)."""
        return tuple(p for d in (self.ingress, self.egress) for p in d.l7_ports if not p.proxied)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels.strings(),
            "revision": self.revision,
            "ingress": self.ingress.to_dict(),
            "egress": self.egress.to_dict(),
            "l7_enforced_at_l4": [
                {"direction": str(p.direction), **p.to_dict()} for p in self.l7_at_l4
            ],
            "warnings": list(self.warnings),
        }


def resolve_policy(
    rules: Sequence[Rule],
    endpoint_labels: LabelSet,
    identities: Mapping[int, LabelSet] | IdentityIndex,
    *,
    mode: EnforcementMode = EnforcementMode.DEFAULT,
    allow_host_ingress: bool = True,
    l7_proxies: Collection[str] = (),
    revision: int | None = None,
) -> ResolvedPolicy:
    """Resolve ``rules`` for the endpoint with ``endpoint_labels``.

    ``identities`` are all known identities (reserved ones are added), including CIDR
    identities labelled ``cidr:<prefix>``. ``l7_proxies`` names the parsers (``http``,
    ``kafka``) whose proxy runs; ports with other L7 rules are allowed at L4 and listed.
    """
    index = identities if isinstance(identities, IdentityIndex) else IdentityIndex(identities)
    mode = EnforcementMode(mode)
    selecting = [(i, r) for i, r in enumerate(rules) if r.selects(endpoint_labels)]
    warnings: list[str] = []
    ingress = _resolve_direction(
        Direction.INGRESS, selecting, index, mode, allow_host_ingress, l7_proxies, warnings
    )
    egress = _resolve_direction(
        Direction.EGRESS, selecting, index, mode, allow_host_ingress, l7_proxies, warnings
    )
    return ResolvedPolicy(endpoint_labels, ingress, egress, revision, tuple(warnings))


def referenced_cidrs(rules: Iterable[Rule]) -> list[tuple[IPNetwork, tuple[IPNetwork, ...]]]:
    """Every CIDR selector in ``rules`` as (prefix, excepts), deduplicated, in order.

    The agent allocates a CIDR identity for each prefix and each except (see
    :func:`cidr_identity_prefixes`) before resolving.
    """
    seen: dict[CIDRRule, None] = {}
    for rule in rules:
        for section in (*rule.ingress, *rule.egress):
            for cidr_rule in section.cidr_rules():
                seen.setdefault(cidr_rule)
    return [(c.cidr, c.excepts) for c in seen]


def cidr_identity_prefixes(rules: Iterable[Rule]) -> list[IPNetwork]:
    """Every prefix (cidrs and excepts) that needs a CIDR identity."""
    return prefixes_needing_identities(CIDRRule(c, ex) for c, ex in referenced_cidrs(rules))


# -- per direction ------------------------------------------------------------------


def _resolve_direction(
    direction: Direction,
    selecting: Sequence[tuple[int, Rule]],
    index: IdentityIndex,
    mode: EnforcementMode,
    allow_host_ingress: bool,
    l7_proxies: Collection[str],
    warnings: list[str],
) -> DirectionPolicy:
    sections: list[Section] = [s for _, r in selecting for s in r.sections(direction)]
    rule_indices = tuple(i for i, r in selecting if r.sections(direction))
    enforced = mode is EnforcementMode.ALWAYS or (
        mode is EnforcementMode.DEFAULT and bool(rule_indices)
    )

    raw: dict[_Key, Verdict] = {}
    for section in sections:
        _allow_section(section, index, raw)

    denied: frozenset[int] = frozenset()
    requirements = [sel for s in sections for sel in s.requires]
    if requirements:
        passing = index.select_all(requirements)
        denied = index.all - passing
        raw = _narrow(raw, passing)

    if direction is Direction.INGRESS and allow_host_ingress and enforced:
        _add(raw, (int(ReservedIdentity.HOST), 0, Protocol.ANY), ALLOW)

    closed = _close(raw)
    closed, l7_ports = _apply_proxies(closed, direction, l7_proxies, warnings)

    cidr_rules = list(dict.fromkeys(c for s in sections for c in s.cidr_rules()))
    known_prefixes = {p for _, labels in index.items() if (p := cidr_prefix(labels))}
    unresolved = tuple(
        p for p in prefixes_needing_identities(cidr_rules) if p not in known_prefixes
    )
    return DirectionPolicy(
        direction=direction,
        enforced=enforced,
        entries={PolicyKey(*k, direction): v for k, v in sorted(closed.items())},
        rules=rule_indices,
        cidrs=tuple((c.cidr, c.excepts) for c in cidr_rules),
        unresolved_cidrs=unresolved,
        denied_by_requirements=denied,
        l7_ports=l7_ports,
    )


def _add(entries: dict[_Key, Verdict], key: _Key, verdict: Verdict) -> None:
    previous = entries.get(key)
    entries[key] = verdict if previous is None else previous.merge(verdict)


def _allow_section(section: Section, index: IdentityIndex, raw: dict[_Key, Verdict]) -> None:
    """Add what one section allows (requirements are applied afterwards)."""
    if not section.has_l3() and not section.to_ports:
        return  # e.g. ``{}`` or only fromRequires: enables enforcement, allows nothing
    peers = index.section_peers(section)
    if not section.to_ports:
        for peer in peers:
            _add(raw, (peer, 0, Protocol.ANY), ALLOW)
        return
    for port_rule in section.to_ports:
        rules = port_rule.rules
        verdict = ALLOW if rules.is_empty() else Verdict(Action.REDIRECT, rules)
        for pp in port_rule.ports:
            for peer in peers:
                _add(raw, (peer, pp.port, pp.protocol), verdict)


def _narrow(raw: dict[_Key, Verdict], passing: frozenset[int]) -> dict[_Key, Verdict]:
    """Keep only identities that pass every requirement; expand "any" into them."""
    out: dict[_Key, Verdict] = {}
    for (identity, port, proto), verdict in raw.items():
        targets = passing if identity == ANY_IDENTITY else passing & {identity}
        for target in targets:
            _add(out, (target, port, proto), verdict)
    return out


def _lookup_order(identity: int, port: int, protocol: Protocol) -> list[_Key]:
    """Keys from most to least specific that a connection may hit."""
    levels = list(dict.fromkeys([(port, protocol), (port, Protocol.ANY), (0, Protocol.ANY)]))
    ids = list(dict.fromkeys([identity, ANY_IDENTITY]))
    return [(i, p, pr) for i in ids for p, pr in levels]


def _meet(a: _Key, b: _Key) -> _Key | None:
    """The most general key both ``a`` and ``b`` cover, or None if they are disjoint."""
    parts = []
    for x, y in zip(a, b, strict=True):
        if x == y or y == 0:
            parts.append(x)
        elif x == 0:
            parts.append(y)
        else:
            return None
    return (parts[0], parts[1], Protocol(parts[2]))


def _close(raw: dict[_Key, Verdict]) -> dict[_Key, Verdict]:
    """Make first-hit lookups give the union of every matching entry.

    Only redirects can disagree with a more general entry (allow already is the top of
    the union), so for each redirect and each overlapping entry the intersection key is
    added, carrying the union of everything that covers it. Then whichever most
    specific entry a lookup hits already holds the full answer.
    """
    redirects = [k for k, v in raw.items() if v.action is Action.REDIRECT]
    if not redirects:
        return dict(raw)
    keys = set(raw)
    for r in redirects:
        for k in raw:
            meet = _meet(r, k)
            if meet is not None:
                keys.add(meet)
    closed: dict[_Key, Verdict] = {}
    for key in keys:
        for general in _lookup_order(*key):
            verdict = raw.get(general)
            if verdict is not None:
                _add(closed, key, verdict)
    return closed


def _apply_proxies(
    entries: dict[_Key, Verdict],
    direction: Direction,
    l7_proxies: Collection[str],
    warnings: list[str],
) -> tuple[dict[_Key, Verdict], tuple[L7Port, ...]]:
    """Downgrade redirects without a running proxy to L4 allows, and list L7 ports."""
    out: dict[_Key, Verdict] = {}
    ports: dict[tuple[int, Protocol], set[str]] = {}
    for key, verdict in entries.items():
        if verdict.action is Action.REDIRECT and verdict.l7 is not None:
            parsers = verdict.l7.parsers()
            ports.setdefault((key[1], key[2]), set()).update(parsers)
            if not all(p in l7_proxies for p in parsers):
                verdict = Verdict(Action.ALLOW, verdict.l7)
        out[key] = verdict
    l7_ports = []
    for (port, proto), parsers in sorted(ports.items()):
        names = tuple(sorted(parsers))
        if len(names) > 1:
            warnings.append(
                f"{direction} port {port}/{proto.name}: rules for several L7 parsers "
                f"({', '.join(names)}) on one port"
            )
        proxied = all(p in l7_proxies for p in names)
        l7_ports.append(L7Port(direction, port, proto, names, proxied))
    return out, tuple(l7_ports)
