"""The lookup contract the datapath relies on, checked against brute force.

The resolver's entries must give, on a first-hit lookup from the most to the least
specific key, the union of every entry that covers the connection; and the tracer (on
labels) must agree with the resolver (on identities).
"""

import random
from typing import Any

import pytest

from cilium_py.labels import RESERVED_LABELS, LabelSet, cidr_identity_labels
from cilium_py.policy import (
    Action,
    HTTPRule,
    L7Rules,
    Protocol,
    Verdict,
    parse_policy,
    resolve_policy,
    trace_policy,
)
from cilium_py.policy.resolve import _close, _lookup_order

ANY, TCP, UDP = Protocol.ANY, Protocol.TCP, Protocol.UDP


def _random_raw(rng: random.Random) -> dict[tuple[int, int, Protocol], Verdict]:
    raw: dict[tuple[int, int, Protocol], Verdict] = {}
    for _ in range(rng.randint(1, 8)):
        identity = rng.choice([0, 7, 8])
        port = rng.choice([0, 80, 81])
        proto = ANY if port == 0 else rng.choice([ANY, TCP, UDP])
        if port and rng.random() < 0.6:
            verdict = Verdict(
                Action.REDIRECT, L7Rules(http=(HTTPRule(path=f"/{rng.randint(0, 3)}"),))
            )
        else:
            verdict = Verdict(Action.ALLOW)
        previous = raw.get((identity, port, proto))
        raw[(identity, port, proto)] = verdict if previous is None else previous.merge(verdict)
    return raw


def _union(raw: dict, identity: int, port: int, proto: Protocol) -> Any:
    covering = [
        v
        for (i, p, pr), v in raw.items()
        if i in (0, identity) and p in (0, port) and pr in (ANY, proto)
    ]
    if not covering:
        return None
    if any(v.action is Action.ALLOW for v in covering):
        return "allow"
    return frozenset(r for v in covering for r in v.l7.http)


def _summary(verdict: Verdict | None) -> Any:
    if verdict is None:
        return None
    if verdict.action is Action.ALLOW:
        return "allow"
    return frozenset(verdict.l7.http)


def _alternative_order(identity: int, port: int, proto: Protocol) -> list:
    """Another most-to-least specific order: port before identity."""
    levels = list(dict.fromkeys([(port, proto), (port, ANY), (0, ANY)]))
    return [(i, p, pr) for p, pr in levels for i in dict.fromkeys([identity, 0])]


@pytest.mark.parametrize("seed", range(400))
def test_first_hit_equals_union(seed: int) -> None:
    rng = random.Random(seed)
    raw = _random_raw(rng)
    closed = _close(raw)
    for identity in (7, 8, 9):
        for port in (80, 81, 82):
            for proto in (TCP, UDP):
                expected = _union(raw, identity, port, proto)
                for order in (_lookup_order, _alternative_order):
                    hit = next(
                        (closed[k] for k in order(identity, port, proto) if k in closed), None
                    )
                    assert _summary(hit) == expected, (raw, identity, port, proto)


# -- tracer and resolver agree ----------------------------------------------------------

IDENTITIES = {
    256: LabelSet.parse(["k8s:role=a", "k8s:env=prod"]),
    257: LabelSet.parse(["k8s:role=b", "k8s:env=dev"]),
    258: LabelSet.parse(["container:role=a", "container:env=dev"]),
    300: cidr_identity_labels("10.0.0.0/8"),
    301: cidr_identity_labels("10.1.0.0/16"),
}
ALL_LABELS = {**{int(k): v for k, v in RESERVED_LABELS.items()}, **IDENTITIES}

SELECTORS = [
    {"matchLabels": {"role": "a"}},
    {"matchLabels": {"k8s:role": "b"}},
    {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
    {},
]


def _random_section(rng: random.Random, direction: str) -> dict[str, Any]:
    p = "from" if direction == "ingress" else "to"
    section: dict[str, Any] = {}
    kind = rng.choice(["none", "endpoints", "entities", "cidr"])
    if kind == "endpoints":
        section[f"{p}Endpoints"] = rng.sample(SELECTORS, rng.randint(1, 2))
    elif kind == "entities":
        section[f"{p}Entities"] = rng.sample(["world", "cluster", "host", "all", "init"], 1)
    elif kind == "cidr":
        cidr: dict[str, Any] = {"cidr": "10.0.0.0/8"}
        if rng.random() < 0.5:
            cidr["except"] = ["10.1.0.0/16"]
        section[f"{p}CIDRSet"] = [cidr]
    if kind != "cidr" and rng.random() < 0.6:
        ports = rng.sample([("80", "TCP"), ("80", "ANY"), ("53", "UDP"), ("81", "TCP")], 2)
        port_rule: dict[str, Any] = {"ports": [{"port": n, "protocol": pr} for n, pr in ports]}
        if all(pr != "UDP" for _, pr in ports) and rng.random() < 0.4:
            port_rule["rules"] = {"http": [{"path": "/x"}]}
        section["toPorts"] = [port_rule]
    if rng.random() < 0.15:
        section[f"{p}Requires"] = [rng.choice(SELECTORS[:3])]
    return section


def _random_policy(rng: random.Random) -> list[dict[str, Any]]:
    rules = []
    for _ in range(rng.randint(0, 4)):
        rule: dict[str, Any] = {"endpointSelector": rng.choice(SELECTORS)}
        for direction in ("ingress", "egress"):
            if rng.random() < 0.6:
                n = rng.randint(0, 2)
                rule[direction] = [_random_section(rng, direction) for _ in range(n)]
        rules.append(rule)
    return rules


@pytest.mark.parametrize("seed", range(60))
def test_trace_agrees_with_resolve(seed: int) -> None:
    _check_agreement(seed)


def _check_agreement(seed: int) -> set[bool]:
    rng = random.Random(seed)
    rules = parse_policy(_random_policy(rng))
    mode = rng.choice(["default", "always"])
    host = rng.random() < 0.7
    endpoints = [256, 257, 258]
    resolved = {
        e: resolve_policy(rules, IDENTITIES[e], IDENTITIES, mode=mode, allow_host_ingress=host)
        for e in endpoints
    }
    outcomes = set()
    for ep in endpoints:
        for peer in ALL_LABELS:
            for port, proto in ((80, TCP), (80, UDP), (53, UDP), (81, TCP), (22, TCP)):
                options: dict[str, Any] = dict(
                    port=port, protocol=proto, mode=mode, allow_host_ingress=host
                )
                inbound = trace_policy(rules, ALL_LABELS[peer], IDENTITIES[ep], **options)
                allowed = resolved[ep].ingress.allows(peer, port, proto)
                assert (inbound.ingress.verdict == "ALLOWED") == allowed, (peer, ep, port)
                outbound = trace_policy(rules, IDENTITIES[ep], ALL_LABELS[peer], **options)
                allowed = resolved[ep].egress.allows(peer, port, proto)
                assert (outbound.egress.verdict == "ALLOWED") == allowed, (ep, peer, port)
                outcomes.add(allowed)
    return outcomes


def test_agreement_checks_are_not_vacuous() -> None:
    seen = set()
    for seed in range(60):
        seen |= _check_agreement(seed)
    assert seen == {True, False}
