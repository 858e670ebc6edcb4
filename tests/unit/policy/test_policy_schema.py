"""The policy JSON schema: Cilium's documented examples in, every invalid class out."""

import ipaddress
import json
from typing import Any

import pytest

from cilium_py.labels import LabelSet
from cilium_py.policy import (
    Entity,
    HTTPRule,
    KafkaRule,
    PolicyValidationError,
    Protocol,
    parse_policy,
)

# -- Cilium's documented examples, as they are ----------------------------------------

L3_LABELS = [
    {
        "labels": [{"key": "name", "value": "l3-rule"}],
        "endpointSelector": {"matchLabels": {"role": "backend"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "frontend"}}]}],
    }
]

REQUIRES = [
    {
        "labels": [{"key": "name", "value": "requires-rule"}],
        "endpointSelector": {"matchLabels": {"env": "prod"}},
        "ingress": [{"fromRequires": [{"matchLabels": {"env": "prod"}}]}],
    },
    {
        "labels": [{"key": "name", "value": "l3-rule"}],
        "endpointSelector": {"matchLabels": {"role": "backend"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "frontend"}}]}],
    },
]

L4_HTTP = [
    {
        "labels": [{"key": "name", "value": "l7-rule"}],
        "endpointSelector": {"matchLabels": {"id": "app1"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"id": "app2"}}],
                "toPorts": [
                    {
                        "ports": [{"port": "80", "protocol": "TCP"}],
                        "rules": {"http": [{"method": "GET", "path": "/public"}]},
                    }
                ],
            }
        ],
    }
]

HTTP_CAPS = [
    {
        "endpointSelector": {"matchLabels": {"app": "service"}},
        "ingress": [
            {
                "toPorts": [
                    {
                        "ports": [{"port": "80", "protocol": "tcp"}],
                        "rules": {
                            "HTTP": [
                                {"method": "GET", "path": "/path1$"},
                                {
                                    "method": "PUT",
                                    "path": "/path2$",
                                    "headers": ["X-My-Header: true"],
                                },
                            ]
                        },
                    }
                ]
            }
        ],
    }
]

KAFKA = [
    {
        "labels": [{"key": "name", "value": "rule1"}],
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "empire-hq"}}],
                "toPorts": [
                    {
                        "ports": [{"port": "9092", "protocol": "TCP"}],
                        "rules": {"kafka": [{"role": "produce", "topic": "deathstar-plans"}]},
                    }
                ],
            }
        ],
    }
]

CIDR = [
    {
        "labels": [{"key": "name", "value": "cidr-rule"}],
        "endpointSelector": {"matchLabels": {"app": "myService"}},
        "egress": [
            {"toCIDR": ["20.1.1.1/32"]},
            {"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}]},
        ],
    }
]

ENTITIES = [
    {"endpointSelector": {"matchLabels": {"env": "dev"}}, "egress": [{"toEntities": ["host"]}]},
    {
        "endpointSelector": {"matchLabels": {"role": "public"}},
        "egress": [{"toEntities": ["world"]}],
    },
]

L4_ONLY = [
    {
        "labels": [{"key": "name", "value": "l4-rule"}],
        "endpointSelector": {"matchLabels": {"app": "myService"}},
        "egress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    }
]

EGRESS_DENY_ALL = [{"endpointSelector": {"matchLabels": {"app": "locked"}}, "egress": [{}]}]

K8S_NAMESPACE = [
    {
        "endpointSelector": {
            "matchLabels": {"k8s:io.kubernetes.pod.namespace": "default", "app": "db"}
        },
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"reserved:host": ""}}],
            },
            {
                "fromEndpoints": [
                    {
                        "matchExpressions": [
                            {"key": "role", "operator": "In", "values": ["backend", "admin"]},
                            {"key": "k8s:env", "operator": "NotIn", "values": ["dev"]},
                            {"key": "team", "operator": "Exists"},
                            {"key": "blocked", "operator": "DoesNotExist"},
                        ]
                    }
                ],
                "toPorts": [{"ports": [{"port": 5432}]}],
            },
        ],
        "description": "db reachable from backends",
    }
]

EXAMPLES = {
    "l3_labels": L3_LABELS,
    "requires": REQUIRES,
    "l4_http": L4_HTTP,
    "http_caps": HTTP_CAPS,
    "kafka": KAFKA,
    "cidr": CIDR,
    "entities": ENTITIES,
    "l4_only": L4_ONLY,
    "egress_deny_all": EGRESS_DENY_ALL,
    "k8s_namespace": K8S_NAMESPACE,
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_documented_examples_are_accepted_and_round_trip(name: str) -> None:
    rules = parse_policy(EXAMPLES[name])
    assert len(rules) == len(EXAMPLES[name])
    again = parse_policy([r.to_dict() for r in rules])
    assert again == rules
    # JSON text and bytes are accepted too.
    assert parse_policy(json.dumps(EXAMPLES[name])) == rules
    assert parse_policy(json.dumps(EXAMPLES[name]).encode()) == rules


def test_l3_example_model() -> None:
    (rule,) = parse_policy(L3_LABELS)
    assert rule.labels == LabelSet.parse(["unspec:name=l3-rule"])
    (section,) = rule.ingress
    assert rule.egress == ()
    assert str(section.endpoints[0]) == '{"matchLabels":{"role":"frontend"}}'


def test_requires_model() -> None:
    rules = parse_policy(REQUIRES)
    assert rules[0].ingress[0].requires[0].match_labels[0].key == "env"
    assert not rules[0].ingress[0].has_l3()


def test_http_rules_in_either_case_are_the_same() -> None:
    (lower,) = parse_policy(L4_HTTP)
    port_rule = lower.ingress[0].to_ports[0]
    assert port_rule.ports[0].port == 80 and port_rule.ports[0].protocol is Protocol.TCP
    assert port_rule.rules.http == (HTTPRule(method="GET", path="/public"),)
    (caps,) = parse_policy(HTTP_CAPS)
    rules = caps.ingress[0].to_ports[0].rules
    assert rules.http[1].headers == ("X-My-Header: true",)
    assert caps.ingress[0].to_ports[0].ports[0].protocol is Protocol.TCP
    assert caps.to_dict()["ingress"][0]["toPorts"][0]["rules"].keys() == {"http"}


def test_kafka_model() -> None:
    (rule,) = parse_policy(KAFKA)
    assert rule.ingress[0].to_ports[0].rules.kafka == (
        KafkaRule(role="produce", topic="deathstar-plans"),
    )
    doc = [
        {
            "endpointSelector": {},
            "ingress": [
                {
                    "toPorts": [
                        {
                            "ports": [{"port": "9092"}],
                            "rules": {
                                "kafka": [{"apiKey": "Fetch", "apiVersion": "2", "clientID": "c1"}]
                            },
                        }
                    ]
                }
            ],
        }
    ]
    (rule,) = parse_policy(doc)
    assert rule.ingress[0].to_ports[0].rules.kafka[0] == KafkaRule(
        api_key="fetch", api_version="2", client_id="c1"
    )


def test_cidr_model() -> None:
    (rule,) = parse_policy(CIDR)
    assert rule.egress[0].cidr == (ipaddress.ip_network("20.1.1.1/32"),)
    cidr_set = rule.egress[1].cidr_set[0]
    assert cidr_set.cidr == ipaddress.ip_network("10.0.0.0/8")
    assert cidr_set.excepts == (ipaddress.ip_network("10.96.0.0/12"),)
    v6 = parse_policy(
        [
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "fromCIDR": ["2001:db8::1", "203.0.113.9/24"],
                        "fromCIDRSet": [{"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}],
                    }
                ],
            }
        ]
    )[0]
    assert [str(n) for n in v6.ingress[0].cidr] == ["2001:db8::1/128", "203.0.113.0/24"]
    assert str(v6.ingress[0].cidr_set[0].excepts[0]) == "2001:db8:1::/48"


def test_entities_model() -> None:
    rules = parse_policy(ENTITIES)
    assert rules[0].egress[0].entities == (Entity.HOST,)
    assert rules[1].egress[0].entities == (Entity.WORLD,)
    everything = [e.value for e in Entity]
    (rule,) = parse_policy([{"endpointSelector": {}, "ingress": [{"fromEntities": everything}]}])
    assert set(rule.ingress[0].entities) == set(Entity)


def test_empty_egress_section_is_kept() -> None:
    (rule,) = parse_policy(EGRESS_DENY_ALL)
    assert len(rule.egress) == 1 and not rule.egress[0].has_l3()
    assert rule.to_dict()["egress"] == [{}]


def test_ports_and_protocols() -> None:
    doc = [
        {
            "endpointSelector": {},
            "ingress": [
                {
                    "toPorts": [
                        {
                            "ports": [
                                {"port": 53, "protocol": "udp"},
                                {"port": "8080"},
                                {"port": "1", "protocol": "Any"},
                                {"port": 65535, "protocol": "TCP"},
                            ]
                        }
                    ]
                }
            ],
        }
    ]
    (rule,) = parse_policy(doc)
    ports = [(p.port, p.protocol) for p in rule.ingress[0].to_ports[0].ports]
    assert ports == [
        (53, Protocol.UDP),
        (8080, Protocol.ANY),
        (1, Protocol.ANY),
        (65535, Protocol.TCP),
    ]


def test_labels_in_string_form_and_nulls() -> None:
    doc = [
        {
            "endpointSelector": {"matchLabels": None},
            "labels": ["name=x", {"key": "team", "value": "a", "source": "k8s"}],
            "ingress": None,
            "egress": [{"toEndpoints": None, "toPorts": [{"ports": [{"port": 1}], "rules": None}]}],
            "description": None,
        }
    ]
    (rule,) = parse_policy(doc)
    assert rule.labels.strings() == ["k8s:team=a", "unspec:name=x"]
    assert rule.ingress == () and rule.description == ""
    assert rule.endpoint_selector.is_wildcard()


def test_empty_document_is_valid() -> None:
    assert parse_policy([]) == []


# -- invalid documents: rejected whole, each problem named by rule index and field ----


def _rule(**parts: Any) -> dict[str, Any]:
    return {"endpointSelector": {"matchLabels": {"app": "x"}}, **parts}


def _ingress(**section: Any) -> dict[str, Any]:
    return _rule(ingress=[section])


def _port(port: Any, protocol: Any = "TCP") -> dict[str, Any]:
    return _ingress(toPorts=[{"ports": [{"port": port, "protocol": protocol}]}])


INVALID: list[tuple[str, Any, dict[str, str]]] = [
    ("not json", "[{", {"$": "not valid JSON"}),
    ("not an array", {"endpointSelector": {}}, {"$": "must be a JSON array of rules"}),
    ("rule not object", [1], {"[0]": "must be an object"}),
    ("missing selector", [{"ingress": [{}]}], {"[0].endpointSelector": "is required"}),
    ("selector not object", [{"endpointSelector": "app=x"}], {"[0].endpointSelector": "object"}),
    ("unknown rule field", [_rule(ingres=[])], {"[0].ingres": "unknown field"}),
    (
        "unknown section field (wrong direction)",
        [_rule(egress=[{"fromEndpoints": [{}]}])],
        {"[0].egress[0].fromEndpoints": "unknown field"},
    ),
    ("ingress not list", [_rule(ingress={})], {"[0].ingress": "must be a list"}),
    ("port zero", [_port("0")], {"[0].ingress[0].toPorts[0].ports[0].port": "must be 1-65535"}),
    ("port too big", [_port(65536)], {"[0].ingress[0].toPorts[0].ports[0].port": "1-65535"}),
    ("port name", [_port("http")], {"[0].ingress[0].toPorts[0].ports[0].port": "1-65535"}),
    ("port bool", [_port(True)], {"[0].ingress[0].toPorts[0].ports[0].port": "1-65535"}),
    ("port negative", [_port(-1)], {"[0].ingress[0].toPorts[0].ports[0].port": "1-65535"}),
    (
        "port missing",
        [_ingress(toPorts=[{"ports": [{}]}])],
        {"[0].ingress[0].toPorts[0].ports[0].port": "is required"},
    ),
    (
        "protocol",
        [_port(80, "SCTP")],
        {"[0].ingress[0].toPorts[0].ports[0].protocol": "TCP, UDP, ANY"},
    ),
    (
        "protocol type",
        [_port(80, 6)],
        {"[0].ingress[0].toPorts[0].ports[0].protocol": "TCP, UDP, ANY"},
    ),
    (
        "no ports",
        [_ingress(toPorts=[{"ports": []}])],
        {"[0].ingress[0].toPorts[0].ports": "at least one port"},
    ),
    ("ports missing", [_ingress(toPorts=[{}])], {"[0].ingress[0].toPorts[0].ports": "is required"}),
    (
        "bad cidr",
        [_ingress(fromCIDR=["10.0.0.0/33"])],
        {"[0].ingress[0].fromCIDR[0]": "not a valid IPv4 or IPv6 CIDR"},
    ),
    (
        "bad v6 cidr",
        [_ingress(fromCIDR=["2001:db8::g/32"])],
        {"[0].ingress[0].fromCIDR[0]": "not a valid"},
    ),
    ("cidr type", [_ingress(fromCIDR=[10])], {"[0].ingress[0].fromCIDR[0]": "CIDR string"}),
    (
        "cidrset without cidr",
        [_ingress(fromCIDRSet=[{"except": []}])],
        {"[0].ingress[0].fromCIDRSet[0].cidr": "is required"},
    ),
    (
        "except outside",
        [
            _rule(
                egress=[
                    {
                        "toCIDRSet": [
                            {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/16", "11.0.0.0/16"]}
                        ]
                    }
                ]
            )
        ],
        {"[0].egress[0].toCIDRSet[0].except[1]": "11.0.0.0/16 is not inside 10.0.0.0/8"},
    ),
    (
        "except other family",
        [_rule(egress=[{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["fd10::/64"]}]}])],
        {"[0].egress[0].toCIDRSet[0].except[0]": "not inside"},
    ),
    (
        "endpoints and cidr",
        [_ingress(fromEndpoints=[{}], fromCIDR=["10.0.0.0/8"])],
        {"[0].ingress[0].fromCIDR": "only one kind of L3 selector"},
    ),
    (
        "endpoints and entities",
        [_rule(egress=[{"toEndpoints": [{}], "toEntities": ["world"]}])],
        {"[0].egress[0].toEntities": "cannot be combined with toEndpoints"},
    ),
    (
        "cidrset and entities",
        [_ingress(fromCIDRSet=[{"cidr": "10.0.0.0/8"}], fromEntities=["world"])],
        {"[0].ingress[0].fromEntities": "cannot be combined with fromCIDR/fromCIDRSet"},
    ),
    (
        "toPorts with cidr",
        [_ingress(fromCIDR=["10.0.0.0/8"], toPorts=[{"ports": [{"port": "80"}]}])],
        {"[0].ingress[0].toPorts": "toPorts goes with fromEndpoints, fromEntities or alone"},
    ),
    (
        "toPorts with cidrset",
        [
            _rule(
                egress=[
                    {"toCIDRSet": [{"cidr": "10.0.0.0/8"}], "toPorts": [{"ports": [{"port": 1}]}]}
                ]
            )
        ],
        {"[0].egress[0].toPorts": "cannot be combined with toCIDR/toCIDRSet"},
    ),
    (
        "bad entity",
        [_ingress(fromEntities=["moon"])],
        {"[0].ingress[0].fromEntities[0]": "must be one of all, world"},
    ),
    (
        "bad selector source",
        [{"endpointSelector": {"matchLabels": {"foo:app": "x"}}}],
        {"[0].endpointSelector.matchLabels": "unknown source 'foo'"},
    ),
    (
        "reserved with value",
        [_ingress(fromEndpoints=[{"matchLabels": {"reserved:host": "yes"}}])],
        {"[0].ingress[0].fromEndpoints[0].matchLabels": "reserved labels take no value"},
    ),
    (
        "matchLabels not strings",
        [{"endpointSelector": {"matchLabels": {"port": 80}}}],
        {"[0].endpointSelector.matchLabels.port.value": "must be a string"},
    ),
    (
        "bad operator",
        [{"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "Like"}]}}],
        {"[0].endpointSelector.matchExpressions[0].operator": "must be one of In, NotIn"},
    ),
    (
        "In without values",
        [{"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}],
        {"[0].endpointSelector.matchExpressions[0].values": "needs values"},
    ),
    (
        "Exists with values",
        [
            {
                "endpointSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            }
        ],
        {"[0].endpointSelector.matchExpressions[0].values": "takes no values"},
    ),
    (
        "expression key source",
        [{"endpointSelector": {"matchExpressions": [{"key": "bad:a", "operator": "Exists"}]}}],
        {"[0].endpointSelector.matchExpressions[0].key": "unknown source 'bad'"},
    ),
    (
        "http and HTTP",
        [_ingress(toPorts=[{"ports": [{"port": 80}], "rules": {"http": [{}], "HTTP": [{}]}}])],
        {"[0].ingress[0].toPorts[0].rules.HTTP": "given twice: 'http' and 'HTTP'"},
    ),
    (
        "http and kafka",
        [_ingress(toPorts=[{"ports": [{"port": 80}], "rules": {"http": [{}], "kafka": [{}]}}])],
        {"[0].ingress[0].toPorts[0].rules.kafka": "only one L7 protocol"},
    ),
    (
        "unknown L7 parser",
        [_ingress(toPorts=[{"ports": [{"port": 80}], "rules": {"grpc": [{}]}}])],
        {"[0].ingress[0].toPorts[0].rules.grpc": "unknown field"},
    ),
    (
        "L7 on UDP",
        [_ingress(toPorts=[{"ports": [{"port": 53, "protocol": "UDP"}], "rules": {"http": [{}]}}])],
        {"[0].ingress[0].toPorts[0].rules": "L7 rules need TCP"},
    ),
    (
        "bad path regex",
        [_ingress(toPorts=[{"ports": [{"port": 80}], "rules": {"http": [{"path": "(["}]}}])],
        {"[0].ingress[0].toPorts[0].rules.http[0].path": "invalid regular expression"},
    ),
    (
        "headers not strings",
        [_ingress(toPorts=[{"ports": [{"port": 80}], "rules": {"HTTP": [{"headers": [1]}]}}])],
        # Keys match in any case; errors name the field as the language spells it.
        {"[0].ingress[0].toPorts[0].rules.http[0].headers[0]": "must be a string"},
    ),
    (
        "kafka role",
        [_ingress(toPorts=[{"ports": [{"port": 9092}], "rules": {"kafka": [{"role": "admin"}]}}])],
        {"[0].ingress[0].toPorts[0].rules.kafka[0].role": "consume, produce"},
    ),
    (
        "kafka apiKey, topic, version",
        [
            _ingress(
                toPorts=[
                    {
                        "ports": [{"port": 9092}],
                        "rules": {"kafka": [{"apiKey": "nope", "topic": "a b", "apiVersion": "x"}]},
                    }
                ]
            )
        ],
        {
            "[0].ingress[0].toPorts[0].rules.kafka[0].apiKey": "unknown Kafka API key",
            "[0].ingress[0].toPorts[0].rules.kafka[0].topic": "1-255 characters",
            "[0].ingress[0].toPorts[0].rules.kafka[0].apiVersion": "decimal",
        },
    ),
    (
        "kafka role and apiKey",
        [
            _ingress(
                toPorts=[
                    {
                        "ports": [{"port": 9092}],
                        "rules": {"kafka": [{"role": "produce", "apiKey": "fetch"}]},
                    }
                ]
            )
        ],
        {"[0].ingress[0].toPorts[0].rules.kafka[0].role": "cannot be combined"},
    ),
    (
        "bad rule label",
        [_rule(labels=[{"key": "a", "source": "nope"}])],
        {"[0].labels[0]": "unknown source"},
    ),
    (
        "rule label missing key",
        [_rule(labels=[{"value": "a"}])],
        {"[0].labels[0]": "key is required"},
    ),
    (
        "conflicting rule labels",
        [_rule(labels=["name=a", "name=b"])],
        {"[0].labels": "one value per source and key"},
    ),
    ("description type", [_rule(description=5)], {"[0].description": "must be a string"}),
]


@pytest.mark.parametrize(
    ("document", "expected"), [(d, e) for _, d, e in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_documents(document: Any, expected: dict[str, str]) -> None:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(document)
    fields = info.value.fields
    for path, fragment in expected.items():
        assert path in fields, fields
        assert fragment in fields[path], fields
        assert path in str(info.value)
    assert isinstance(info.value, ValueError)


def test_message_names_rule_index_and_field_exactly() -> None:
    good = _ingress(toPorts=[{"ports": [{"port": "80"}]}])
    bad = _port("0")
    with pytest.raises(PolicyValidationError) as info:
        parse_policy([good, good, bad])
    assert info.value.fields == {"[2].ingress[0].toPorts[0].ports[0].port": "must be 1-65535"}


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy([_port("0"), {"ingress": []}, _rule(egress=[{"toEntities": ["x"]}])])
    assert list(info.value.fields) == [
        "[0].ingress[0].toPorts[0].ports[0].port",
        "[1].endpointSelector",
        "[2].egress[0].toEntities[0]",
    ]
