"""Resolving rules into one endpoint's map entries, with Cilium 1.0 semantics."""

import ipaddress
from typing import Any

import pytest

from cilium_py.labels import LabelSet, cidr_identity_labels
from cilium_py.policy import (
    ANY_IDENTITY,
    Action,
    Direction,
    EnforcementMode,
    IdentityIndex,
    PolicyKey,
    Protocol,
    cidr_identity_prefixes,
    parse_policy,
    referenced_cidrs,
    resolve_policy,
)

TCP, UDP, ANY = Protocol.TCP, Protocol.UDP, Protocol.ANY
HOST, WORLD, CLUSTER, HEALTH, INIT = 1, 2, 3, 4, 5


def ls(*items: str) -> LabelSet:
    return LabelSet.parse(items)


BACKEND = ls("k8s:role=backend", "k8s:env=prod")
FRONT_PROD = ls("k8s:role=frontend", "k8s:env=prod")
FRONT_DEV = ls("k8s:role=frontend", "k8s:env=dev")
OTHER = ls("container:app=other")

IDS = {256: BACKEND, 257: FRONT_PROD, 258: FRONT_DEV, 259: OTHER}


def resolve(doc: list[dict[str, Any]], labels: LabelSet = BACKEND, ids=None, **kw: Any):
    return resolve_policy(parse_policy(doc), labels, IDS if ids is None else ids, **kw)


def backend_rule(**parts: Any) -> dict[str, Any]:
    return {"endpointSelector": {"matchLabels": {"role": "backend"}}, **parts}


L3 = [backend_rule(ingress=[{"fromEndpoints": [{"matchLabels": {"role": "frontend"}}]}])]


# -- enforcement ----------------------------------------------------------------------


def test_no_rules_default_mode_enforces_nothing() -> None:
    policy = resolve([])
    assert not policy.ingress.enforced and not policy.egress.enforced
    assert policy.ingress.allows(259, 80, TCP) and policy.egress.allows(WORLD, 443, TCP)


def test_ingress_section_enables_ingress_enforcement_only() -> None:
    policy = resolve(L3)
    assert policy.ingress.enforced and not policy.egress.enforced
    assert policy.ingress.rules == (0,) and policy.egress.rules == ()
    assert policy.egress.allows(259, 1, UDP)


def test_rules_not_selecting_the_endpoint_do_not_enforce() -> None:
    policy = resolve(L3, labels=OTHER)
    assert not policy.ingress.enforced


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_empty_section_denies_everything(direction: str) -> None:
    policy = resolve([backend_rule(**{direction: [{}]})])
    dp = policy.direction(Direction(direction))
    assert dp.enforced
    assert not dp.allows(257, 80, TCP) and not dp.allows(WORLD, 80, TCP)
    if direction == "egress":
        assert dp.entries == {}


def test_empty_section_list_is_no_section() -> None:
    assert not resolve([backend_rule(ingress=[])]).ingress.enforced


def test_mode_always_enforces_without_rules() -> None:
    policy = resolve([], mode=EnforcementMode.ALWAYS)
    assert policy.ingress.enforced and policy.egress.enforced
    assert not policy.ingress.allows(257, 80, TCP)
    assert not policy.egress.allows(257, 80, TCP)
    # The host keeps reaching the endpoint.
    assert policy.ingress.allows(HOST, 80, TCP)


def test_mode_never_enforces_nothing() -> None:
    policy = resolve(L3, mode="never")
    assert not policy.ingress.enforced
    assert policy.ingress.allows(259, 80, TCP)
    # Entries are still computed, for display.
    assert PolicyKey(257, 0, ANY, Direction.INGRESS) in policy.ingress.entries


# -- L3 / L4 ------------------------------------------------------------------------


def test_l3_allows_selected_identities_on_all_ports() -> None:
    policy = resolve(L3)
    assert policy.ingress.allows(257, 80, TCP) and policy.ingress.allows(258, 53, UDP)
    assert not policy.ingress.allows(259, 80, TCP)
    assert not policy.ingress.allows(WORLD, 80, TCP)
    assert policy.ingress.entries[PolicyKey(257, 0, ANY, Direction.INGRESS)].action is Action.ALLOW


def test_l3_l4_allows_only_listed_ports() -> None:
    doc = [
        backend_rule(
            ingress=[
                {
                    "fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}, {"port": 53}]}],
                }
            ]
        )
    ]
    ing = resolve(doc).ingress
    assert ing.allows(257, 80, TCP)
    assert not ing.allows(257, 80, UDP)
    assert not ing.allows(257, 81, TCP)
    assert ing.allows(257, 53, UDP) and ing.allows(258, 53, TCP)
    assert not ing.allows(259, 80, TCP)
    assert set(ing.entries) == {
        PolicyKey(i, p, pr, Direction.INGRESS)
        for i, p, pr in [(257, 80, TCP), (258, 80, TCP), (257, 53, ANY), (258, 53, ANY)]
    } | {PolicyKey(HOST, 0, ANY, Direction.INGRESS)}


def test_l4_only_allows_any_identity_on_the_port() -> None:
    doc = [backend_rule(egress=[{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}])]
    eg = resolve(doc).egress
    assert PolicyKey(ANY_IDENTITY, 80, TCP, Direction.EGRESS) in eg.entries
    for identity in (WORLD, 259, 999_999):
        assert eg.allows(identity, 80, TCP)
        assert not eg.allows(identity, 443, TCP)


def test_allows_are_a_union_across_rules() -> None:
    doc = L3 + [
        backend_rule(ingress=[{"fromEndpoints": [{"matchLabels": {"app": "other"}}],
                               "toPorts": [{"ports": [{"port": 22}]}]}]),
        {"endpointSelector": {"matchLabels": {"k8s:env": "prod"}},
         "ingress": [{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": 443}]}]}]},
    ]  # fmt: skip
    ing = resolve(doc).ingress
    assert ing.rules == (0, 1, 2)
    assert ing.allows(257, 9999, TCP)
    assert ing.allows(259, 22, TCP) and not ing.allows(259, 23, TCP)
    assert ing.allows(WORLD, 443, TCP) and not ing.allows(WORLD, 22, TCP)


# -- requirements ---------------------------------------------------------------------

REQUIRES = [
    {
        "endpointSelector": {"matchLabels": {"env": "prod"}},
        "ingress": [{"fromRequires": [{"matchLabels": {"env": "prod"}}]}],
    },
    backend_rule(ingress=[{"fromEndpoints": [{"matchLabels": {"role": "frontend"}}]}]),
]


def test_requires_narrows_other_rules() -> None:
    ing = resolve(REQUIRES).ingress
    assert ing.allows(257, 80, TCP)
    assert not ing.allows(258, 80, TCP)  # frontend, but env=dev
    assert 258 in ing.denied_by_requirements and 257 not in ing.denied_by_requirements
    assert WORLD in ing.denied_by_requirements


def test_requires_alone_allows_nothing_but_enforces() -> None:
    ing = resolve(REQUIRES[:1]).ingress
    assert ing.enforced
    assert not ing.allows(257, 80, TCP)


def test_requires_expands_wildcards_to_passing_identities() -> None:
    doc = REQUIRES[:1] + [backend_rule(ingress=[{"toPorts": [{"ports": [{"port": 80}]}]}])]
    ing = resolve(doc).ingress
    assert all(k.identity != ANY_IDENTITY for k in ing.entries)
    assert ing.allows(257, 80, TCP) and ing.allows(256, 80, TCP)
    assert not ing.allows(258, 80, TCP) and not ing.allows(WORLD, 80, TCP)
    # Unknown identities are not let in by the expanded wildcard.
    assert not ing.allows(999, 80, TCP)


def test_requires_do_not_cross_directions() -> None:
    doc = [backend_rule(egress=[{"toRequires": [{"matchLabels": {"env": "prod"}}]}])] + L3
    policy = resolve(doc)
    assert policy.ingress.allows(258, 80, TCP)
    assert 258 in policy.egress.denied_by_requirements


def test_host_is_exempt_from_requirements() -> None:
    assert resolve(REQUIRES).ingress.allows(HOST, 80, TCP)


# -- host -------------------------------------------------------------------------------


def test_host_allowed_unless_turned_off() -> None:
    assert resolve(L3).ingress.allows(HOST, 22, TCP)
    ing = resolve(L3, allow_host_ingress=False).ingress
    assert not ing.allows(HOST, 22, TCP)
    # Egress to the host is not exempt.
    eg = resolve([backend_rule(egress=[{}])]).egress
    assert not eg.allows(HOST, 22, TCP)


def test_host_selected_by_reserved_label() -> None:
    doc = [backend_rule(ingress=[{"fromEndpoints": [{"matchLabels": {"reserved:host": ""}}]}])]
    ing = resolve(doc, allow_host_ingress=False).ingress
    assert ing.allows(HOST, 1, TCP) and not ing.allows(257, 1, TCP)


# -- entities ---------------------------------------------------------------------------

CIDR_IDS = {
    **IDS,
    1000: cidr_identity_labels("198.51.100.0/24"),
    1001: cidr_identity_labels("2001:db8::/32"),
}


def entity_peers(entity: str) -> set[int]:
    doc = [backend_rule(egress=[{"toEntities": [entity]}])]
    return {k.identity for k in resolve(doc, ids=CIDR_IDS).egress.entries}


def test_entities() -> None:
    assert entity_peers("world") == {WORLD, 1000, 1001}
    assert entity_peers("host") == {HOST}
    # The other nodes themselves (remote-node, 6) are part of the cluster too.
    assert entity_peers("cluster") == {CLUSTER, HEALTH, INIT, 6, 256, 257, 258, 259}
    assert entity_peers("remote-node") == {6}
    assert entity_peers("all") == {ANY_IDENTITY}
    assert entity_peers("health") == {HEALTH}
    assert entity_peers("init") == {INIT}


def test_entity_with_ports() -> None:
    doc = [
        backend_rule(egress=[{"toEntities": ["world"], "toPorts": [{"ports": [{"port": 443}]}]}])
    ]
    eg = resolve(doc, ids=CIDR_IDS).egress
    assert eg.allows(WORLD, 443, TCP) and eg.allows(1000, 443, UDP)
    assert not eg.allows(WORLD, 80, TCP) and not eg.allows(257, 443, TCP)


def test_empty_endpoint_selector_means_any() -> None:
    doc = [backend_rule(ingress=[{"fromEndpoints": [{}]}])]
    ing = resolve(doc).ingress
    assert PolicyKey(ANY_IDENTITY, 0, ANY, Direction.INGRESS) in ing.entries
    assert ing.allows(12345, 80, TCP)


# -- CIDR ----------------------------------------------------------------------------------

OUTSIDE = {
    **IDS,
    300: cidr_identity_labels("10.0.0.0/8"),
    301: cidr_identity_labels("10.96.0.0/12"),
    302: cidr_identity_labels("10.96.1.0/24"),
    303: cidr_identity_labels("10.1.0.0/16"),
    304: cidr_identity_labels("20.1.1.1/32"),
    305: cidr_identity_labels("198.51.100.0/24"),
    306: cidr_identity_labels("2001:db8::/32"),
    307: cidr_identity_labels("2001:db8:1::/48"),
}

CIDR_DOC = [
    backend_rule(
        egress=[
            {"toCIDR": ["20.1.1.1/32"]},
            {"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}]},
        ]
    )
]


def test_cidr_and_except() -> None:
    eg = resolve(CIDR_DOC, ids=OUTSIDE).egress
    assert {k.identity for k in eg.entries} == {300, 303, 304}
    assert eg.allows(304, 80, TCP) and eg.allows(300, 80, TCP) and eg.allows(303, 1, UDP)
    assert not eg.allows(301, 80, TCP)  # the except itself
    assert not eg.allows(302, 80, TCP)  # inside the except
    assert not eg.allows(305, 80, TCP) and not eg.allows(WORLD, 80, TCP)
    assert not eg.allows(257, 80, TCP)
    net = ipaddress.ip_network
    assert eg.cidrs == (
        (net("20.1.1.1/32"), ()),
        (net("10.0.0.0/8"), (net("10.96.0.0/12"),)),
    )
    assert eg.unresolved_cidrs == ()


def test_cidr_v6() -> None:
    doc = [backend_rule(ingress=[{"fromCIDRSet": [{"cidr": "2001:db8::/32",
                                                   "except": ["2001:db8:1::/48"]}]}])]  # fmt: skip
    ing = resolve(doc, ids=OUTSIDE).ingress
    assert ing.allows(306, 80, TCP) and not ing.allows(307, 80, TCP)
    assert not ing.allows(300, 80, TCP)


def test_zero_prefix_selects_world() -> None:
    doc = [backend_rule(egress=[{"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}]}])]
    eg = resolve(doc, ids=OUTSIDE).egress
    assert eg.allows(WORLD, 80, TCP) and eg.allows(305, 80, TCP) and eg.allows(304, 1, TCP)
    assert not eg.allows(300, 80, TCP) and not eg.allows(303, 80, TCP)
    assert not eg.allows(306, 80, TCP)  # v6 prefix, v4 rule


def test_unresolved_cidrs_are_reported() -> None:
    eg = resolve(CIDR_DOC).egress  # no CIDR identities known
    assert [str(p) for p in eg.unresolved_cidrs] == ["10.0.0.0/8", "10.96.0.0/12", "20.1.1.1/32"]
    assert not eg.allows(WORLD, 80, TCP)


def test_referenced_cidrs_over_all_rules() -> None:
    rules = parse_policy(CIDR_DOC + [{"endpointSelector": {}, "ingress": [
        {"fromCIDR": ["20.1.1.1/32", "2001:db8::/32"]}]}])  # fmt: skip
    net = ipaddress.ip_network
    assert referenced_cidrs(rules) == [
        (net("20.1.1.1/32"), ()),
        (net("10.0.0.0/8"), (net("10.96.0.0/12"),)),
        (net("2001:db8::/32"), ()),
    ]
    assert [str(p) for p in cidr_identity_prefixes(rules)] == [
        "10.0.0.0/8", "10.96.0.0/12", "20.1.1.1/32", "2001:db8::/32",
    ]  # fmt: skip


# -- L7 ----------------------------------------------------------------------------------

HTTP_DOC = [
    backend_rule(
        ingress=[
            {
                "fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
                "toPorts": [
                    {
                        "ports": [{"port": "80", "protocol": "TCP"}],
                        "rules": {"HTTP": [{"method": "GET", "path": "/public"}]},
                    }
                ],
            }
        ]
    )
]


def l7_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """A rule opening 80/TCP to anyone with the given L7 rules."""
    port_rule = {"ports": [{"port": "80", "protocol": "TCP"}], "rules": rules}
    return backend_rule(ingress=[{"toPorts": [port_rule]}])


def test_l7_ports_are_enforced_at_l4_without_a_proxy() -> None:
    policy = resolve(HTTP_DOC)
    verdict = policy.ingress.lookup(257, 80, TCP)
    assert verdict is not None and verdict.action is Action.ALLOW and verdict.l7_at_l4
    assert verdict.l7 is not None and verdict.l7.http[0].path == "/public"
    (port,) = policy.l7_at_l4
    assert (port.direction, port.port, port.protocol, port.parsers) == (
        Direction.INGRESS, 80, TCP, ("http",),
    )  # fmt: skip
    assert "enforced at L4 only" in str(port)
    assert policy.to_dict()["l7_enforced_at_l4"] == [
        {"direction": "ingress", "port": 80, "protocol": "TCP", "parsers": ["http"],
         "enforced_at": "L4"}
    ]  # fmt: skip


def test_l7_ports_redirect_when_the_proxy_runs() -> None:
    policy = resolve(HTTP_DOC, l7_proxies={"http"})
    verdict = policy.ingress.lookup(257, 80, TCP)
    assert verdict is not None and verdict.action is Action.REDIRECT
    assert policy.l7_at_l4 == ()
    assert policy.ingress.l7_ports[0].proxied


def test_plain_allow_lifts_l7_restrictions_union() -> None:
    doc = HTTP_DOC + [backend_rule(ingress=[{"fromEndpoints": [{"matchLabels": {"env": "prod"}}]}])]
    ing = resolve(doc, l7_proxies={"http"}).ingress
    prod = ing.lookup(257, 80, TCP)
    dev = ing.lookup(258, 80, TCP)
    assert prod is not None and prod.action is Action.ALLOW and prod.l7 is None
    assert dev is not None and dev.action is Action.REDIRECT


def test_l4_only_allow_on_same_port_lifts_l7_for_everyone() -> None:
    doc = HTTP_DOC + [backend_rule(ingress=[{"toPorts": [{"ports": [{"port": 80}]}]}])]
    ing = resolve(doc, l7_proxies={"http"}).ingress
    for identity in (257, 258, 259):
        verdict = ing.lookup(identity, 80, TCP)
        assert verdict is not None and verdict.action is Action.ALLOW


def test_l7_rules_of_two_rules_add_up() -> None:
    second = l7_rule({"http": [{"path": "/health"}]})
    ing = resolve(HTTP_DOC + [second], l7_proxies={"http"}).ingress
    front = ing.lookup(257, 80, TCP)
    other = ing.lookup(259, 80, TCP)
    assert front is not None and front.l7 is not None
    assert [r.path for r in front.l7.http] == ["/public", "/health"]
    assert other is not None and other.l7 is not None
    assert [r.path for r in other.l7.http] == ["/health"]


def test_two_parsers_on_one_port_warn() -> None:
    kafka = l7_rule({"kafka": [{"topic": "t"}]})
    policy = resolve(HTTP_DOC + [kafka])
    assert any("several L7 parsers" in w for w in policy.warnings)


# -- output shape ---------------------------------------------------------------------


def test_output_shape() -> None:
    policy = resolve(HTTP_DOC + REQUIRES[:1], revision=7)
    out = policy.to_dict()
    assert out["revision"] == 7 and out["labels"] == BACKEND.strings()
    ingress = out["ingress"]
    assert set(ingress) == {
        "enforcing", "rules", "entries", "cidrs", "unresolved_cidrs",
        "denied_by_requirements", "l7_ports",
    }  # fmt: skip
    assert {"identity": 1, "port": 0, "protocol": "ANY", "verdict": "allow"} in ingress["entries"]
    assert {
        "identity": 257, "port": 80, "protocol": "TCP", "verdict": "allow",
        "l7": {"http": [{"method": "GET", "path": "/public"}]}, "l7_enforced_at": "L4",
    } in ingress["entries"]  # fmt: skip
    assert out["egress"]["enforcing"] is False
    keys = policy.entries()
    assert all(k.direction is Direction.INGRESS for k in keys)


def test_identity_index_can_be_reused() -> None:
    index = IdentityIndex(IDS)
    rules = parse_policy(L3)
    a = resolve_policy(rules, BACKEND, index)
    b = resolve_policy(rules, BACKEND, IDS)
    assert a.ingress.entries == b.ingress.entries
    with pytest.raises(ValueError):
        IdentityIndex({0: OTHER})
