"""Parsed policy rules: what the schema produces and the resolver consumes.

Ingress and egress sections share one shape (:class:`Section`); only their JSON names
differ (``fromEndpoints`` vs ``toEndpoints`` ...). Keeping one type lets the resolver
and the tracer handle both directions with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cilium_py.labels import IPNetwork, LabelSet

from .cidr import CIDRRule
from .entities import Entity, entity_matches
from .l4 import PortRule
from .selector import EndpointSelector


class Direction(StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"

    @property
    def peer_prefix(self) -> str:
        """``from`` for ingress (peers are sources), ``to`` for egress."""
        return "from" if self is Direction.INGRESS else "to"


@dataclass(frozen=True, slots=True)
class Section:
    """One element of a rule's ``ingress`` or ``egress`` list.

    The L3 part (endpoints, cidrs, entities) says which peers; ``to_ports`` which ports;
    ``requires`` does not allow anything, it narrows what every rule selecting the same
    endpoint allows.
    """

    endpoints: tuple[EndpointSelector, ...] = ()
    requires: tuple[EndpointSelector, ...] = ()
    cidr: tuple[IPNetwork, ...] = ()
    cidr_set: tuple[CIDRRule, ...] = ()
    entities: tuple[Entity, ...] = ()
    to_ports: tuple[PortRule, ...] = ()

    def cidr_rules(self) -> tuple[CIDRRule, ...]:
        """``fromCIDR`` and ``fromCIDRSet`` as one list of CIDR rules."""
        return tuple(CIDRRule(net) for net in self.cidr) + self.cidr_set

    def has_l3(self) -> bool:
        """Whether the section names peers at all (else L4-only or allow-nothing)."""
        return bool(self.endpoints or self.cidr or self.cidr_set or self.entities)

    def selects_any_peer(self) -> bool:
        """True when the section's peers are "every identity, even future ones"."""
        if not self.has_l3():
            return bool(self.to_ports)
        return Entity.ALL in self.entities or any(s.is_wildcard() for s in self.endpoints)

    def selects_peer(self, labels: LabelSet) -> bool:
        """Whether the peer with ``labels`` is one this section allows (ports aside)."""
        if self.selects_any_peer():
            return True
        return (
            any(sel.matches(labels) for sel in self.endpoints)
            or any(rule.selects(labels) for rule in self.cidr_rules())
            or any(entity_matches(entity, labels) for entity in self.entities)
        )

    def to_dict(self, direction: Direction) -> dict[str, Any]:
        p = direction.peer_prefix
        out: dict[str, Any] = {}
        if self.endpoints:
            out[f"{p}Endpoints"] = [s.to_dict() for s in self.endpoints]
        if self.requires:
            out[f"{p}Requires"] = [s.to_dict() for s in self.requires]
        if self.cidr:
            out[f"{p}CIDR"] = [str(n) for n in self.cidr]
        if self.cidr_set:
            out[f"{p}CIDRSet"] = [r.to_dict() for r in self.cidr_set]
        if self.entities:
            out[f"{p}Entities"] = [str(e) for e in self.entities]
        if self.to_ports:
            out["toPorts"] = [r.to_dict() for r in self.to_ports]
        return out


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a policy document."""

    endpoint_selector: EndpointSelector
    ingress: tuple[Section, ...] = ()
    egress: tuple[Section, ...] = ()
    labels: LabelSet = field(default_factory=LabelSet)
    description: str = ""

    def sections(self, direction: Direction) -> tuple[Section, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def selects(self, endpoint_labels: LabelSet) -> bool:
        """Whether this rule applies to the endpoint with these labels."""
        return self.endpoint_selector.matches(endpoint_labels)

    def to_dict(self) -> dict[str, Any]:
        """The rule in Cilium's JSON form (canonical: ``http`` lowercase, ports as text)."""
        out: dict[str, Any] = {"endpointSelector": self.endpoint_selector.to_dict()}
        if self.ingress:
            out["ingress"] = [s.to_dict(Direction.INGRESS) for s in self.ingress]
        if self.egress:
            out["egress"] = [s.to_dict(Direction.EGRESS) for s in self.egress]
        if self.labels:
            out["labels"] = self.labels.to_dicts()
        if self.description:
            out["description"] = self.description
        return out
