"""policy trace: which rules matched, why, and the final verdict, in both directions."""

from typing import Any

from cilium_py.labels import LabelSet
from cilium_py.policy import Protocol, TraceVerdict, parse_policy, parse_port_protocol, trace_policy

TCP, UDP = Protocol.TCP, Protocol.UDP


def ls(*items: str) -> LabelSet:
    return LabelSet.parse(items)


FRONT = ls("k8s:role=frontend", "k8s:env=prod")
FRONT_DEV = ls("k8s:role=frontend", "k8s:env=dev")
BACK = ls("k8s:role=backend", "k8s:env=prod")

POLICY = parse_policy(
    [
        {
            "labels": [{"key": "name", "value": "l4-rule"}],
            "description": "frontends reach backends on 80",
            "endpointSelector": {"matchLabels": {"role": "backend"}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                }
            ],
        },
        {
            "labels": [{"key": "name", "value": "requires-rule"}],
            "endpointSelector": {"matchLabels": {"env": "prod"}},
            "ingress": [{"fromRequires": [{"matchLabels": {"env": "prod"}}]}],
        },
        {
            "labels": [{"key": "name", "value": "front-egress"}],
            "endpointSelector": {"matchLabels": {"role": "frontend"}},
            "egress": [
                {"toEndpoints": [{"matchLabels": {"role": "backend"}}]},
                {"toEntities": ["world"], "toPorts": [{"ports": [{"port": 443}]}]},
            ],
        },
    ]
)


def trace(src: LabelSet, dst: LabelSet, dport: str | None = None, **kw: Any):
    port, proto = parse_port_protocol(dport) if dport else (None, Protocol.ANY)
    return trace_policy(POLICY, src, dst, port=port, protocol=proto, **kw)


def test_allowed_both_directions() -> None:
    result = trace(FRONT, BACK, "80/TCP")
    assert result.verdict is TraceVerdict.ALLOWED
    assert result.ingress.verdict is TraceVerdict.ALLOWED
    assert result.egress.verdict is TraceVerdict.ALLOWED
    assert [r.index for r in result.ingress.selected] == [0, 1]
    assert [r.index for r in result.egress.selected] == [2]
    assert result.ingress.selected[0].allows and not result.ingress.selected[1].allows
    text = result.render()
    assert text.splitlines()[1] == (
        "Tracing From: [k8s:env=prod, k8s:role=frontend] => "
        "To: [k8s:env=prod, k8s:role=backend] Ports: [80/TCP]"
    )
    assert "Resolving ingress policy for [k8s:env=prod, k8s:role=backend]" in text
    assert '* Rule 0 [unspec:name=l4-rule] {"matchLabels":{"role":"backend"}}: selected' in text
    assert "Description: frontends reach backends on 80" in text
    assert 'fromEndpoints {"matchLabels":{"role":"frontend"}}: matched' in text
    assert "Allows port 80/TCP" in text
    assert "2/3 rules selected" in text
    assert "Resolving egress policy for [k8s:env=prod, k8s:role=frontend]" in text
    assert "Ingress verdict: allowed" in text and "Egress verdict: allowed" in text
    assert text.endswith("Final verdict: ALLOWED\n")


def test_wrong_port_is_denied_at_ingress() -> None:
    result = trace(FRONT, BACK, "81/TCP")
    assert result.ingress.verdict is TraceVerdict.DENIED
    assert result.egress.verdict is TraceVerdict.ALLOWED
    text = result.render()
    assert "Port 81/TCP not in [80/TCP]" in text
    assert "Found no allow rule" in text
    assert text.endswith("Final verdict: DENIED\n")


def test_requirement_denies_whatever_allows() -> None:
    result = trace(FRONT_DEV, BACK, "80/TCP")
    assert result.verdict is TraceVerdict.DENIED
    assert "Requirement not met (rule 1 ingress[0])" in result.ingress.reason
    assert 'Requires labels {"matchLabels":{"env":"prod"}}: NOT met' in result.render()


def test_egress_denied_at_the_source() -> None:
    world = ls("reserved:world")
    result = trace(FRONT, world, "80/TCP")
    assert result.ingress.verdict is TraceVerdict.ALLOWED  # world is not an endpoint
    assert result.egress.verdict is TraceVerdict.DENIED
    assert "toEntities world: matched" in result.render()
    assert trace(FRONT, world, "443/TCP").verdict is TraceVerdict.ALLOWED
    assert "Egress verdict: denied" in result.render()
    assert result.render().endswith("Final verdict: DENIED\n")


def test_not_enforced_without_selecting_rules() -> None:
    other = ls("container:app=other")
    result = trace(other, other, "80/TCP")
    assert result.verdict is TraceVerdict.ALLOWED
    assert "not enforced" in result.ingress.reason and not result.ingress.enforced
    assert "0/3 rules selected" in result.render()


def test_without_port_only_l3_rules_allow() -> None:
    result = trace(FRONT, BACK)
    assert result.ingress.verdict is TraceVerdict.DENIED
    assert "no port given, not evaluated" in result.render()
    assert "Ports: [any]" in result.render()
    assert result.egress.verdict is TraceVerdict.ALLOWED  # L3-only egress rule


def test_host_exemption_and_flag() -> None:
    host = ls("reserved:host")
    assert trace(host, BACK, "22/TCP").ingress.verdict is TraceVerdict.ALLOWED
    assert "The host may always reach" in trace(host, BACK, "22/TCP").ingress.reason
    denied = trace(host, BACK, "22/TCP", allow_host_ingress=False)
    assert denied.ingress.verdict is TraceVerdict.DENIED


def test_modes() -> None:
    other = ls("container:app=other")
    assert trace(other, other, "80/TCP", mode="always").verdict is TraceVerdict.DENIED
    never = trace(FRONT_DEV, BACK, "80/TCP", mode="never")
    assert never.verdict is TraceVerdict.ALLOWED
    assert "mode never" in never.ingress.reason


def test_l7_rules_are_reported() -> None:
    rules = parse_policy(
        [
            {
                "endpointSelector": {"matchLabels": {"id": "app1"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"id": "app2"}}],
                        "toPorts": [
                            {
                                "ports": [{"port": "80", "protocol": "tcp"}],
                                "rules": {"HTTP": [{"method": "GET", "path": "/public"}]},
                            }
                        ],
                    }
                ],
            }
        ]
    )
    src, dst = ls("container:id=app2"), ls("container:id=app1")
    result = trace_policy(rules, src, dst, port=80, protocol=TCP)
    assert result.verdict is TraceVerdict.ALLOWED
    assert result.ingress.l7 is not None and result.ingress.l7.http[0].path == "/public"
    assert "with http rules (enforced at L4 until its proxy runs)" in result.render()
    proxied = trace_policy(rules, src, dst, port=80, protocol=TCP, l7_proxies={"http"})
    assert "redirected to the proxy" in proxied.render()
    assert trace_policy(rules, src, dst, port=80, protocol=UDP).verdict is TraceVerdict.DENIED


def test_empty_egress_section_denies() -> None:
    rules = parse_policy([{"endpointSelector": {"matchLabels": {"app": "x"}}, "egress": [{}]}])
    result = trace_policy(rules, ls("app=x"), ls("app=y"), port=80, protocol=TCP)
    assert result.egress.verdict is TraceVerdict.DENIED
    assert "Allows nothing by itself (enables enforcement)" in result.render()


def test_cidr_trace() -> None:
    rules = parse_policy(
        [
            {
                "endpointSelector": {"matchLabels": {"app": "x"}},
                "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}]}],
            }
        ]
    )
    src = ls("app=x")
    inside = trace_policy(rules, src, ls("cidr:10.1.0.0/16", "reserved:world"), port=1)
    excepted = trace_policy(rules, src, ls("cidr:10.96.0.0/12", "reserved:world"), port=1)
    assert inside.verdict is TraceVerdict.ALLOWED
    assert excepted.verdict is TraceVerdict.DENIED
    assert "toCIDR 10.0.0.0/8 except 10.96.0.0/12: no match" in excepted.render()


def test_to_dict() -> None:
    out = trace(FRONT, BACK, "80/TCP").to_dict()
    assert out["verdict"] == "ALLOWED" and out["port"] == 80 and out["protocol"] == "TCP"
    rule = out["ingress"]["rules"][0]
    assert rule["index"] == 0 and rule["labels"] == ["unspec:name=l4-rule"]
    assert rule["description"] == "frontends reach backends on 80"
    assert rule["sections"][0]["allows"] is True
    assert out["ingress"]["rules_selected"] == 2 and out["ingress"]["rules_total"] == 3


def test_parse_port_protocol() -> None:
    assert parse_port_protocol("80/TCP") == (80, TCP)
    assert parse_port_protocol("53/udp") == (53, UDP)
    assert parse_port_protocol("8080") == (8080, Protocol.ANY)
