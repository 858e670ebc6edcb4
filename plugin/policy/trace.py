"""Policy trace: would traffic from these labels to those labels be allowed, and why?

The tracer works on label sets the user types (``policy trace -s ... -d ...``), not on
allocated identities, so it can answer for endpoints that do not exist yet. It checks
ingress at the destination and egress at the source with the same section predicates
the resolver uses (:meth:`Section.selects_peer`, requirements, host exemption), so its
verdict matches what the datapath would do for those identities.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cilium_py.labels import LabelSet, reserved_label

from .kafka import KafkaPolicy, KafkaRequestInfo
from .l4 import Protocol
from .l7 import HTTPRequest, L7Rules
from .resolve import EnforcementMode
from .rule import Direction, Rule, Section

_RULER = "-" * 64


class TraceVerdict(StrEnum):
    ALLOWED = "ALLOWED"
    DENIED = "DENIED"


@dataclass
class SectionTrace:
    """How one ingress/egress section of a selecting rule judged the traffic."""

    index: int
    allows: bool = False
    requirement_failed: bool = False
    l7: L7Rules | None = None
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "allows": self.allows,
            "requirement_failed": self.requirement_failed,
            "l7": self.l7.to_dict() if self.l7 else None,
            "explanation": list(self.lines),
        }


@dataclass
class RuleTrace:
    """A rule that selects the traced endpoint."""

    index: int
    rule: Rule
    sections: list[SectionTrace] = field(default_factory=list)

    @property
    def allows(self) -> bool:
        return any(s.allows for s in self.sections)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "labels": self.rule.labels.strings(),
            "description": self.rule.description,
            "endpointSelector": self.rule.endpoint_selector.to_dict(),
            "allows": self.allows,
            "sections": [s.to_dict() for s in self.sections],
        }


@dataclass
class DirectionTrace:
    """Ingress at the destination, or egress at the source."""

    direction: Direction
    subject: LabelSet
    peer: LabelSet
    enforced: bool
    rules_total: int
    selected: list[RuleTrace]
    verdict: TraceVerdict
    reason: str
    l7: L7Rules | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": str(self.direction),
            "enforced": self.enforced,
            "rules_selected": len(self.selected),
            "rules_total": self.rules_total,
            "rules": [r.to_dict() for r in self.selected],
            "verdict": str(self.verdict),
            "reason": self.reason,
            "l7": self.l7.to_dict() if self.l7 else None,
        }

    def render(self) -> list[str]:
        subject = ", ".join(self.subject.strings())
        lines = [f"Resolving {self.direction} policy for [{subject}]"]
        for rt in self.selected:
            tag = f" [{', '.join(rt.rule.labels.strings())}]" if rt.rule.labels else ""
            lines.append(f"* Rule {rt.index}{tag} {rt.rule.endpoint_selector}: selected")
            if rt.rule.description:
                lines.append(f"    Description: {rt.rule.description}")
            for st in rt.sections:
                lines.append(f"    {self.direction}[{st.index}]:")
                lines.extend(f"      {line}" for line in st.lines)
        lines.append(f"{len(self.selected)}/{self.rules_total} rules selected")
        lines.append(self.reason)
        lines.append(f"{self.direction.capitalize()} verdict: {self.verdict.lower()}")
        return lines


@dataclass
class TraceResult:
    source: LabelSet
    destination: LabelSet
    port: int | None
    protocol: Protocol
    ingress: DirectionTrace
    egress: DirectionTrace

    @property
    def verdict(self) -> TraceVerdict:
        both = (self.ingress.verdict, self.egress.verdict)
        if all(v is TraceVerdict.ALLOWED for v in both):
            return TraceVerdict.ALLOWED
        return TraceVerdict.DENIED

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.strings(),
            "destination": self.destination.strings(),
            "port": self.port,
            "protocol": self.protocol.name,
            "ingress": self.ingress.to_dict(),
            "egress": self.egress.to_dict(),
            "verdict": str(self.verdict),
        }

    def render(self) -> str:
        """Text in the style of Cilium's ``policy trace``, ending with the final verdict."""
        ports = f"{self.port}/{self.protocol.name}" if self.port else "any"
        src = ", ".join(self.source.strings())
        dst = ", ".join(self.destination.strings())
        lines = [_RULER, f"Tracing From: [{src}] => To: [{dst}] Ports: [{ports}]", ""]
        lines += self.ingress.render()
        lines.append("")
        lines += self.egress.render()
        lines += ["", f"Final verdict: {self.verdict}"]
        return "\n".join(lines) + "\n"


def trace_policy(
    rules: Sequence[Rule],
    source: LabelSet,
    destination: LabelSet,
    *,
    port: int | None = None,
    protocol: Protocol = Protocol.ANY,
    mode: EnforcementMode = EnforcementMode.DEFAULT,
    allow_host_ingress: bool = True,
    l7_proxies: Collection[str] = (),
    http: HTTPRequest | None = None,
    kafka: KafkaRequestInfo | None = None,
) -> TraceResult:
    """Trace ``source`` -> ``destination`` (optionally to ``port``/``protocol``).

    Without a port only rules that allow all ports (L3-only) can allow; rules with
    ``toPorts`` are shown as not evaluated. Protocol ``ANY`` asks whether some protocol
    on the port is allowed. ``l7_proxies`` names the running proxies, as for
    :func:`~.resolve.resolve_policy`, so the trace says where L7 rules are enforced.
    With ``http``, ports with HTTP rules are judged for that request as the proxy would;
    with ``kafka``, ports with Kafka rules likewise.
    """
    mode = EnforcementMode(mode)
    protocol = Protocol(protocol)
    options = (port, protocol, mode, allow_host_ingress, frozenset(l7_proxies), http, kafka)
    ingress = _trace_direction(Direction.INGRESS, rules, destination, source, *options)
    egress = _trace_direction(Direction.EGRESS, rules, source, destination, *options)
    return TraceResult(source, destination, port, protocol, ingress, egress)


def _trace_direction(
    direction: Direction,
    rules: Sequence[Rule],
    subject: LabelSet,
    peer: LabelSet,
    port: int | None,
    protocol: Protocol,
    mode: EnforcementMode,
    allow_host_ingress: bool,
    l7_proxies: frozenset[str],
    http: HTTPRequest | None = None,
    kafka: KafkaRequestInfo | None = None,
) -> DirectionTrace:
    selected = [
        RuleTrace(i, rule)
        for i, rule in enumerate(rules)
        if rule.sections(direction) and rule.selects(subject)
    ]
    for rt in selected:
        for j, section in enumerate(rt.rule.sections(direction)):
            rt.sections.append(_trace_section(j, section, direction, peer, port, protocol))

    def result(verdict: TraceVerdict, reason: str, l7: L7Rules | None = None) -> DirectionTrace:
        enforced = mode is EnforcementMode.ALWAYS or (
            mode is EnforcementMode.DEFAULT and bool(selected)
        )
        return DirectionTrace(
            direction, subject, peer, enforced, len(rules), selected, verdict, reason, l7
        )

    allowed, denied = TraceVerdict.ALLOWED, TraceVerdict.DENIED
    if mode is EnforcementMode.NEVER:
        return result(allowed, f"Policy enforcement is off (mode never): {direction} allowed")
    if mode is EnforcementMode.DEFAULT and not selected:
        return result(
            allowed, f"No rule with an {direction} section selects it: {direction} not enforced"
        )
    if direction is Direction.INGRESS and allow_host_ingress and reserved_label("host") in peer:
        return result(allowed, "The host may always reach its local endpoints")
    failed = [
        (rt.index, st.index) for rt in selected for st in rt.sections if st.requirement_failed
    ]
    if failed:
        where = ", ".join(f"rule {i} {direction}[{j}]" for i, j in failed)
        return result(denied, f"Requirement not met ({where}): denied whatever else allows")
    allowing = [st for rt in selected for st in rt.sections if st.allows]
    if not allowing:
        return result(denied, "Found no allow rule")
    if any(st.l7 is None for st in allowing):
        return result(allowed, "Found allow rule")
    merged = L7Rules()
    for st in allowing:
        assert st.l7 is not None
        merged = merged.merge(st.l7)
    parsers = "+".join(merged.parsers())
    if all(p in l7_proxies for p in merged.parsers()):
        where = "redirected to the proxy, which checks each request"
    else:
        where = "enforced at L4 until its proxy runs"
    if http is not None and merged.http:
        hit = next((r for r in merged.http if r.allows(http)), None)
        if hit is None:
            return result(denied, f"Found allow rule with {parsers} rules ({where}); no http "
                          f"rule allows {http}: the proxy answers 403", merged)
        return result(allowed, f"Found allow rule with {parsers} rules ({where}); {http} is "
                      f"allowed by http rule {hit.to_dict() or '{}'}", merged)
    if kafka is not None and merged.kafka is not None:
        verdict = KafkaPolicy.build(merged.kafka).check(kafka)
        head = f"Found allow rule with {parsers} rules ({where}); {kafka}"
        if not verdict.allowed:
            return result(
                denied, f"{head} is denied ({verdict.reason}): the proxy answers error "
                f"{29 if kafka.topics else 'authorization'}", merged)
        rules = ", ".join(str(merged.kafka[i].to_dict() or "{}") for i in verdict.rules)
        return result(allowed, f"{head} is allowed ({verdict.reason}) by kafka rule(s) "
                      f"{rules}", merged)
    return result(allowed, f"Found allow rule with {parsers} rules ({where})", merged)


def _trace_section(
    index: int,
    section: Section,
    direction: Direction,
    peer: LabelSet,
    port: int | None,
    protocol: Protocol,
) -> SectionTrace:
    st = SectionTrace(index)
    p = direction.peer_prefix
    for sel in section.requires:
        if sel.matches(peer):
            st.lines.append(f"Requires labels {sel}: met")
        else:
            st.requirement_failed = True
            st.lines.append(f"Requires labels {sel}: NOT met")
    if not section.has_l3() and not section.to_ports:
        st.lines.append("Allows nothing by itself (enables enforcement)")
        return st
    if section.has_l3():
        if not section.selects_peer(peer):
            st.lines.append(f"{_describe_l3(section, p)}: no match")
            return st
        st.lines.append(f"{_describe_l3(section, p)}: matched")
    else:
        st.lines.append("No L3 selector: any peer")
    if not section.to_ports:
        st.lines.append("Allows all ports")
        st.allows = True
        return st
    if port is None:
        ports = ", ".join(str(pp) for pr in section.to_ports for pp in pr.ports)
        st.lines.append(f"Allows only ports [{ports}]; no port given, not evaluated")
        return st
    l7: L7Rules | None = None
    plain = False
    for pr in section.to_ports:
        hits = [pp for pp in pr.ports if pp.covers(port, protocol)]
        if not hits:
            continue
        st.allows = True
        if pr.rules.is_empty():
            plain = True
            st.lines.append(f"Allows port {hits[0]}")
        else:
            l7 = pr.rules if l7 is None else l7.merge(pr.rules)
            st.lines.append(f"Allows port {hits[0]} with {'+'.join(pr.rules.parsers())} rules")
    if not st.allows:
        ports = ", ".join(str(pp) for pr in section.to_ports for pp in pr.ports)
        st.lines.append(f"Port {port}/{protocol.name} not in [{ports}]")
    st.l7 = None if plain else l7
    return st


def _describe_l3(section: Section, p: str) -> str:
    parts = []
    if section.endpoints:
        parts.append(f"{p}Endpoints " + ", ".join(str(s) for s in section.endpoints))
    if section.cidr_rules():
        parts.append(f"{p}CIDR " + ", ".join(str(c) for c in section.cidr_rules()))
    if section.entities:
        parts.append(f"{p}Entities " + ", ".join(str(e) for e in section.entities))
    return "; ".join(parts)
