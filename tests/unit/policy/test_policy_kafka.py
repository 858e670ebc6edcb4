"""Kafka rules: validation (``rules.kafka``) and what a request is allowed (Cilium's semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from cilium_py.policy import KafkaRule, L7Rules, PolicyValidationError, parse_policy
from cilium_py.policy.kafka import (
    API_KEYS,
    ROLES,
    KafkaPolicy,
    KafkaRequestInfo,
    api_name,
)

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS = 0, 1, 2, 3, 18
HEARTBEAT, JOIN_GROUP, CREATE_TOPICS = 12, 11, 19


def _doc(*kafka: dict[str, Any] | None) -> list[dict[str, Any]]:
    rules: dict[str, Any] = {"kafka": list(kafka) if kafka != (None,) else None}
    return [
        {
            "endpointSelector": {"matchLabels": {"app": "kafka"}},
            "ingress": [{"toPorts": [{"ports": [{"port": "9092"}], "rules": rules}]}],
        }
    ]


def _rules(*kafka: dict[str, Any]) -> tuple[KafkaRule, ...]:
    (rule,) = parse_policy(_doc(*kafka))
    rules = rule.ingress[0].to_ports[0].rules.kafka
    assert rules is not None
    return rules


def _policy(*kafka: dict[str, Any]) -> KafkaPolicy:
    return KafkaPolicy.build(_rules(*kafka))


def _req(
    key: int, *topics: str | None, version: int = 3, client: str | None = "c"
) -> KafkaRequestInfo:
    return KafkaRequestInfo(key, version, client, tuple(topics))


# -- validation -----------------------------------------------------------------------


def test_role_and_api_key_match_in_any_case_and_are_kept_lower() -> None:
    assert _rules({"role": "PRODUCE"}, {"apiKey": "ApiVersions"}, {"apiKey": "OFFSETS"}) == (
        KafkaRule(role="produce"),
        KafkaRule(api_key="apiversions"),
        KafkaRule(api_key="offsets"),
    )


def test_api_version_as_string_or_number() -> None:
    assert _rules({"apiVersion": "7"}, {"apiVersion": 0}, {"apiVersion": "32767"}) == (
        KafkaRule(api_version="7"),
        KafkaRule(api_version="0"),
        KafkaRule(api_version="32767"),
    )


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        ({"role": "admin"}, "role", "consume, produce"),
        ({"role": "produce", "apiKey": "fetch"}, "role", "cannot be combined"),
        ({"apiKey": "produced"}, "apiKey", "unknown Kafka API key 'produced'"),
        ({"apiVersion": "-1"}, "apiVersion", "0 to 32767"),
        ({"apiVersion": "32768"}, "apiVersion", "0 to 32767"),
        ({"apiVersion": "1.5"}, "apiVersion", "decimal"),
        ({"apiVersion": True}, "apiVersion", "must be a string"),
        ({"topic": "a" * 256}, "topic", "1-255 characters"),
        ({"topic": "empire/announce"}, "topic", "1-255 characters"),
        ({"clientID": 5}, "clientID", "must be a string"),
        ({"topics": "x"}, "topics", "unknown field"),
    ],
)
def test_invalid_rule_names_rule_and_field(rule: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(_doc({"role": "consume"}, rule))
    path = f"[0].ingress[0].toPorts[0].rules.kafka[1].{field}"
    assert path in info.value.fields, info.value.fields
    assert fragment in info.value.fields[path]


def test_every_problem_of_a_rule_is_reported_at_once() -> None:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(_doc({"apiKey": "nope", "apiVersion": "x", "topic": "a b"}))
    assert {p.rsplit(".", 1)[1] for p in info.value.fields} == {"apiKey", "apiVersion", "topic"}


def test_longest_topic_is_accepted() -> None:
    assert _rules({"topic": "a" * 255})[0].topic == "a" * 255


def test_empty_kafka_list_still_redirects_and_null_is_absent() -> None:
    (rule,) = parse_policy(_doc())
    rules = rule.ingress[0].to_ports[0].rules
    assert rules == L7Rules(kafka=())
    assert not rules.is_empty() and rules.parsers() == ("kafka",)
    assert parse_policy([r.to_dict() for r in [rule]]) == [rule]
    (rule,) = parse_policy(_doc(None))
    assert rule.ingress[0].to_ports[0].rules.is_empty()


def test_empty_kafka_list_merges_with_other_rules() -> None:
    some = L7Rules(kafka=(KafkaRule(role="produce"),))
    assert L7Rules(kafka=()).merge(some) == some
    assert L7Rules(kafka=()).merge(L7Rules()) == L7Rules(kafka=())
    assert L7Rules().merge(L7Rules()) == L7Rules()


# -- names and roles ------------------------------------------------------------------


def test_api_key_names() -> None:
    assert API_KEYS["produce"] == PRODUCE and API_KEYS["offsets"] == LIST_OFFSETS
    assert API_KEYS["listoffsets"] == LIST_OFFSETS and API_KEYS["apiversions"] == API_VERSIONS
    assert api_name(HEARTBEAT) == "Heartbeat" and api_name(999) == "999"
    # Every name Cilium accepts is known.
    cilium = "produce fetch offsets metadata leaderandisr stopreplica updatemetadata \
        controlledshutdown offsetcommit offsetfetch findcoordinator joingroup heartbeat \
        leavegroup syncgroup describegroups listgroups saslhandshake apiversions createtopics \
        deletetopics deleterecords initproducerid offsetforleaderepoch addpartitionstotxn \
        addoffsetstotxn endtxn writetxnmarkers txnoffsetcommit describeacls createacls \
        deleteacls describeconfigs alterconfigs".split()
    assert [API_KEYS[n] for n in cilium] == list(range(34))


def test_roles_expand_as_in_cilium() -> None:
    assert ROLES["produce"] == {PRODUCE, METADATA, API_VERSIONS}
    assert ROLES["consume"] == {1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18}
    produce = _policy({"role": "produce"})
    assert [k for k in range(76) if produce.check(_req(k)).allowed] == [0, 3, 18]
    consume = _policy({"role": "Consume"})
    assert [k for k in range(76) if consume.check(_req(k)).allowed] == sorted(ROLES["consume"])


# -- matching -------------------------------------------------------------------------


def test_empty_rule_list_allows_nothing() -> None:
    policy = KafkaPolicy.build(())
    verdict = policy.check(_req(API_VERSIONS))
    assert not verdict.allowed and "no rule allows ApiVersions v3" in verdict.reason


def test_rule_without_fields_allows_everything() -> None:
    policy = _policy({})
    assert policy.check(_req(CREATE_TOPICS, "a", "b")).allowed
    assert policy.check(_req(77, version=99, client=None)).allowed


def test_api_key_version_and_client_id() -> None:
    policy = _policy({"apiKey": "fetch", "apiVersion": "11", "clientID": "outpost"})
    assert policy.check(_req(FETCH, "t", version=11, client="outpost")).allowed
    assert not policy.check(_req(FETCH, "t", version=10, client="outpost")).allowed
    assert not policy.check(_req(FETCH, "t", version=11, client="Outpost")).allowed
    assert not policy.check(_req(FETCH, "t", version=11, client=None)).allowed
    assert not policy.check(_req(PRODUCE, "t", version=11, client="outpost")).allowed


def test_every_named_topic_must_be_allowed() -> None:
    policy = _policy(
        {"role": "produce", "topic": "deathstar-plans"},
        {"role": "produce", "topic": "empire-announce"},
    )
    both = policy.check(_req(PRODUCE, "deathstar-plans", "empire-announce"))
    assert both.allowed and both.rules == (0, 1)
    mixed = policy.check(_req(PRODUCE, "empire-announce", "rebels", "empire-announce"))
    assert not mixed.allowed and mixed.denied_topics == ("rebels",)
    assert "topic(s) rebels" in mixed.reason


def test_topic_rule_only_counts_when_its_other_fields_match() -> None:
    policy = _policy({"role": "produce", "topic": "a"}, {"role": "consume", "topic": "b"})
    verdict = policy.check(_req(PRODUCE, "a", "b"))
    assert not verdict.allowed and verdict.denied_topics == ("b",)
    assert policy.check(_req(METADATA, "a", "b")).allowed  # both roles allow Metadata


def test_rule_without_topic_allows_all_topics_of_a_request() -> None:
    policy = _policy({"apiKey": "produce", "topic": "a"}, {"apiKey": "produce", "clientID": "hq"})
    assert policy.check(_req(PRODUCE, "a", "z", client="hq")).allowed
    assert not policy.check(_req(PRODUCE, "a", "z", client="other")).allowed


def test_request_without_topics_is_allowed_by_a_topic_rule() -> None:
    policy = _policy({"role": "consume", "topic": "empire-announce"})
    assert policy.check(_req(HEARTBEAT)).allowed
    assert policy.check(_req(METADATA)).allowed  # Metadata for all topics, as in Cilium
    assert not policy.check(_req(PRODUCE)).allowed


def test_topic_named_only_by_id_needs_a_rule_without_topic() -> None:
    by_topic = _policy({"role": "produce", "topic": "a"})
    verdict = by_topic.check(_req(PRODUCE, "a", None, version=13))
    assert not verdict.allowed and verdict.denied_topics == (None,)
    assert "(topic id)" in verdict.reason
    assert _policy({"role": "produce"}).check(_req(PRODUCE, None, version=13)).allowed


def test_denied_request_lists_all_its_topics_when_no_rule_matches() -> None:
    verdict = _policy({"role": "consume"}).check(_req(PRODUCE, "a", "b", "a"))
    assert not verdict.allowed and verdict.denied_topics == ("a", "b")


def test_keys_match_in_any_case() -> None:
    assert _rules({"Role": "Produce", "TOPIC": "a", "ApiVersion": "3", "clientid": "x"}) == (
        KafkaRule(role="produce", topic="a", api_version="3", client_id="x"),
    )
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(_doc({"ROLE": "produce", "apikey": "fetch"}))
    assert any("cannot be combined" in m for m in info.value.fields.values())
