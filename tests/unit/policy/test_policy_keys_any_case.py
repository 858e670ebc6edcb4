"""Every key of the policy language matches without regard to case (issue 11 item 18)."""

from __future__ import annotations

import pytest

from cilium_py.policy import PolicyValidationError, parse_policy


def test_keys_in_any_case_give_the_same_rules() -> None:
    canonical = [{
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [{
            "fromEndpoints": [{"matchLabels": {"app": "empire-hq"}}],
            "toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}],
                         "rules": {"kafka": [{"role": "produce", "topic": "deathstar-plans"}]}}],
        }],
        "labels": ["policy=kafka"],
    }]
    shouted = [{
        "EndpointSelector": {"MatchLabels": {"app": "kafka"}},
        "Ingress": [{
            "FROMENDPOINTS": [{"matchlabels": {"app": "empire-hq"}}],
            "toports": [{"Ports": [{"Port": "9092", "Protocol": "tcp"}],
                         "Rules": {"Kafka": [{"Role": "produce", "Topic": "deathstar-plans"}]}}],
        }],
        "Labels": ["policy=kafka"],
    }]
    assert parse_policy(shouted) == parse_policy(canonical)


def test_label_keys_and_values_keep_their_case() -> None:
    upper = parse_policy([{"endpointSelector": {"matchLabels": {"App": "Web"}}}])
    lower = parse_policy([{"endpointSelector": {"matchLabels": {"app": "web"}}}])
    assert upper != lower


def test_the_same_key_twice_in_different_case_is_refused() -> None:
    with pytest.raises(PolicyValidationError) as err:
        parse_policy([{"endpointSelector": {}, "ingress": [], "Ingress": []}])
    assert any("given twice" in msg for msg in err.value.fields.values())
