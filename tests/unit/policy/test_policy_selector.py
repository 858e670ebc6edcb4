"""Endpoint selectors over label sets: sources, reserved keys, expressions."""

import pytest

from cilium_py.labels import LabelError, LabelSet, LabelSource
from cilium_py.policy import EndpointSelector, Operator, Requirement, parse_policy
from cilium_py.policy.selector import parse_selector_key


def labels(*items: str) -> LabelSet:
    return LabelSet.parse(items)


def selector(doc: dict) -> EndpointSelector:
    (rule,) = parse_policy([{"endpointSelector": doc}])
    return rule.endpoint_selector


def test_bare_key_matches_any_source() -> None:
    sel = selector({"matchLabels": {"app": "web"}})
    assert sel.matches(labels("k8s:app=web"))
    assert sel.matches(labels("container:app=web", "x=y"))
    assert sel.matches(labels("unspec:app=web"))
    assert not sel.matches(labels("k8s:app=db"))
    assert not sel.matches(labels("k8s:application=web"))


def test_prefixed_key_matches_only_that_source() -> None:
    sel = selector({"matchLabels": {"k8s:app": "web"}})
    assert sel.matches(labels("k8s:app=web"))
    assert not sel.matches(labels("container:app=web"))
    ns = selector({"matchLabels": {"k8s:io.kubernetes.pod.namespace": "default"}})
    assert ns.matches(labels("k8s:io.kubernetes.pod.namespace=default", "k8s:app=x"))
    assert not ns.matches(labels("k8s:io.kubernetes.pod.namespace=kube-system"))


def test_reserved_keys() -> None:
    host = selector({"matchLabels": {"reserved:host": ""}})
    assert host.matches(labels("reserved:host"))
    assert not host.matches(labels("reserved:world"))
    assert not host.matches(labels("container:host"))


def test_all_terms_must_hold() -> None:
    sel = selector({"matchLabels": {"app": "web", "k8s:env": "prod"}})
    assert sel.matches(labels("container:app=web", "k8s:env=prod"))
    assert not sel.matches(labels("container:app=web", "container:env=prod"))


def test_empty_selector_selects_everything() -> None:
    sel = selector({})
    assert sel.is_wildcard()
    assert sel.matches(LabelSet()) and sel.matches(labels("reserved:world"))


@pytest.mark.parametrize(
    ("expr", "yes", "no"),
    [
        (
            {"key": "role", "operator": "In", "values": ["a", "b"]},
            ["k8s:role=b"],
            ["k8s:role=c", "x=y"],
        ),
        (
            {"key": "role", "operator": "NotIn", "values": ["a"]},
            ["k8s:role=b", "x=y"],
            ["container:role=a"],
        ),
        ({"key": "role", "operator": "Exists"}, ["k8s:role=", "mesos:role=x"], ["x=y"]),
        ({"key": "role", "operator": "DoesNotExist"}, ["x=y"], ["k8s:role=a"]),
        (
            {"key": "k8s:role", "operator": "In", "values": ["a"]},
            ["k8s:role=a"],
            ["container:role=a"],
        ),
        ({"key": "k8s:role", "operator": "Exists"}, ["k8s:role=a"], ["container:role=a"]),
        ({"key": "k8s:role", "operator": "DoesNotExist"}, ["container:role=a"], ["k8s:role=a"]),
        ({"key": "reserved:world", "operator": "Exists"}, ["reserved:world"], ["reserved:host"]),
    ],
)
def test_match_expressions(expr: dict, yes: list[str], no: list[str]) -> None:
    sel = selector({"matchExpressions": [expr]})
    for item in yes:
        assert sel.matches(labels(item)), item
    for item in no:
        assert not sel.matches(labels(item)), item


def test_labels_and_expressions_combine() -> None:
    sel = selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
        }
    )
    assert sel.matches(labels("k8s:app=web", "k8s:env=prod"))
    assert not sel.matches(labels("k8s:app=web", "k8s:env=dev"))


def test_not_in_with_two_sources() -> None:
    # Any label with the key whose value is listed defeats NotIn.
    req = Requirement(LabelSource.ANY, "env", Operator.NOT_IN, ("dev",))
    assert not req.matches(labels("k8s:env=prod", "container:env=dev"))


def test_keys_and_round_trip() -> None:
    assert parse_selector_key("app") == (LabelSource.ANY, "app")
    assert parse_selector_key("any:app") == (LabelSource.ANY, "app")
    assert parse_selector_key("k8s:app") == (LabelSource.K8S, "app")
    with pytest.raises(LabelError):
        parse_selector_key("bogus:app")
    with pytest.raises(LabelError):
        parse_selector_key("reserved:nothing")
    doc = {
        "matchLabels": {"k8s:app": "web", "tier": "front"},
        "matchExpressions": [{"key": "k8s:env", "operator": "In", "values": ["a"]}],
    }
    sel = selector(doc)
    assert sel.to_dict() == doc
    assert selector(sel.to_dict()) == sel


def test_from_labels() -> None:
    sel = EndpointSelector.from_labels(["app=web", "k8s:env=prod"])
    assert sel.matches(labels("container:app=web", "k8s:env=prod"))
    assert not sel.matches(labels("container:app=web", "container:env=prod"))
