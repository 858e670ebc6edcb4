"""LabelSet: sorted, hashable, canonical identity keys."""

import pytest

from cilium_py.labels import Label, LabelError, LabelSet, LabelSource, parse_label


def test_order_does_not_matter() -> None:
    a = LabelSet.parse(["k8s:app=web", "container:tier=front", "reserved:host"])
    b = LabelSet.parse(["reserved:host", "k8s:app=web", "container:tier=front"])
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a.canonical() == "container:tier=front;k8s:app=web;reserved:host"
    assert str(a) == a.canonical()
    assert list(a) == sorted(a)


def test_canonical_round_trip() -> None:
    labels = LabelSet.parse(["k8s:io.kubernetes.pod.namespace=default", "cidr:2001:db8::/32"])
    assert LabelSet.from_canonical(labels.canonical()) == labels
    assert LabelSet.from_canonical("") == LabelSet()
    assert LabelSet().canonical() == ""
    assert not LabelSet()


def test_bare_labels_parse_as_unspec_or_any() -> None:
    assert LabelSet.parse(["app=web"]).strings() == ["unspec:app=web"]
    assert LabelSet.parse(["app=web"], selector=True).strings() == ["any:app=web"]


def test_duplicates_collapse_and_conflicts_raise() -> None:
    assert len(LabelSet.parse(["app=web", "unspec:app=web"])) == 1
    # Same key from two sources is two labels.
    assert len(LabelSet.parse(["k8s:app=web", "container:app=web"])) == 2
    with pytest.raises(LabelError) as info:
        LabelSet.parse(["k8s:app=web", "k8s:app=db"])
    assert "one value per source and key" in str(info.value)


def test_parse_refuses_a_single_string() -> None:
    with pytest.raises(TypeError):
        LabelSet.parse("app=web")
    with pytest.raises(TypeError):
        LabelSet(["app=web"])  # type: ignore[list-item]


def test_queries() -> None:
    labels = LabelSet.parse(["k8s:app=web", "container:app=web2", "k8s:env=prod"])
    assert parse_label("k8s:app=web") in labels
    assert len(labels.with_key("app")) == 2
    assert labels.with_key("app", LabelSource.K8S) == (parse_label("k8s:app=web"),)
    assert labels.has(Label(LabelSource.ANY, "app", "web2"))
    assert not labels.has(Label(LabelSource.K8S, "app", "web2"))
    assert labels.contains_all(LabelSet.parse(["app=web", "env=prod"], selector=True))
    assert not labels.contains_all(LabelSet.parse(["app=web", "env=dev"], selector=True))
    assert labels.by_source(LabelSource.K8S).strings() == ["k8s:app=web", "k8s:env=prod"]
    union = labels | LabelSet.parse(["reserved:host"])
    assert len(union) == 4


def test_dict_form() -> None:
    labels = LabelSet.from_dicts(
        [{"key": "name", "value": "l3-rule"}, {"key": "x", "source": "k8s", "value": "y"}]
    )
    assert labels.strings() == ["k8s:x=y", "unspec:name=l3-rule"]
    assert LabelSet.from_dicts(labels.to_dicts()) == labels
    with pytest.raises(LabelError):
        LabelSet.from_dicts([{"key": "", "value": "v"}])
    with pytest.raises(LabelError):
        LabelSet.from_dicts([{"key": "a", "source": "bogus"}])
