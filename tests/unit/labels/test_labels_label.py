"""Parsing single labels: every source form, bare labels, and clear errors."""

import pytest

from cilium_py.labels import (
    Label,
    LabelError,
    LabelParseError,
    LabelSource,
    parse_label,
    parse_select_label,
)


@pytest.mark.parametrize(
    ("text", "source", "key", "value"),
    [
        ("container:app=web", LabelSource.CONTAINER, "app", "web"),
        (
            "k8s:io.kubernetes.pod.namespace=default",
            LabelSource.K8S,
            "io.kubernetes.pod.namespace",
            "default",
        ),
        ("mesos:key=value", LabelSource.MESOS, "key", "value"),
        ("reserved:host", LabelSource.RESERVED, "host", ""),
        ("reserved:world", LabelSource.RESERVED, "world", ""),
        ("unspec:x", LabelSource.UNSPEC, "x", ""),
        ("app=web", LabelSource.UNSPEC, "app", "web"),
        ("app", LabelSource.UNSPEC, "app", ""),
        ("  container:app=web  ", LabelSource.CONTAINER, "app", "web"),
        # A ':' after '=' belongs to the value, not to a source.
        ("url=http://example", LabelSource.UNSPEC, "url", "http://example"),
        # Only the first ':' ends the source.
        ("container:a:b=c", LabelSource.CONTAINER, "a:b", "c"),
        ("container:app=", LabelSource.CONTAINER, "app", ""),
        ("container:app=a=b", LabelSource.CONTAINER, "app", "a=b"),
    ],
)
def test_parse_label_forms(text: str, source: LabelSource, key: str, value: str) -> None:
    label = parse_label(text)
    assert (label.source, label.key, label.value) == (source, key, value)


def test_bare_label_is_unspec_on_endpoint_and_any_in_selector() -> None:
    assert parse_label("app=web").source is LabelSource.UNSPEC
    assert parse_select_label("app=web").source is LabelSource.ANY
    assert parse_select_label("k8s:app=web").source is LabelSource.K8S
    assert parse_select_label("any:app=web").source is LabelSource.ANY


def test_cidr_labels_are_normalised() -> None:
    assert parse_label("cidr:10.1.2.3/8").key == "10.0.0.0/8"
    assert parse_label("cidr:2001:db8::1/32").key == "2001:db8::/32"
    assert str(parse_label("cidr:198.51.100.0/24")) == "cidr:198.51.100.0/24"


def test_string_form_round_trips() -> None:
    for text in ["container:app=web", "reserved:host", "k8s:a.b/c=d", "cidr:2001:db8::/32"]:
        assert str(parse_label(text)) == text
        assert parse_label(str(parse_label(text))) == parse_label(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty label"),
        ("   ", "empty label"),
        ("foo:bar=baz", "unknown source 'foo'"),
        ("contianer:app=web", "unknown source 'contianer'"),
        ("container:", "empty key"),
        ("=value", "empty key"),
        ("container:=web", "empty key"),
        ("reserved:bogus", "unknown reserved label 'bogus'"),
        ("reserved:host=yes", "reserved labels take no value"),
        ("any:app=web", "only valid in selectors"),
        ("k8s:my app=web", "whitespace"),
        ("a;b=c", "must not contain ';'"),
        ("app=a;b", "value must not contain ';'"),
        ("cidr:not-a-prefix", "not a CIDR prefix"),
        ("cidr:10.0.0.0/8=x", "cidr labels take no value"),
    ],
)
def test_parse_errors_name_the_label_and_reason(text: str, reason: str) -> None:
    with pytest.raises(LabelParseError) as info:
        parse_label(text)
    assert isinstance(info.value, ValueError)
    assert info.value.label == text
    assert reason in info.value.reason
    assert repr(text) in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(LabelParseError):
        parse_label(42)  # type: ignore[arg-type]


def test_constructor_validates_too() -> None:
    with pytest.raises(LabelError):
        Label("nosuch", "app", "web")  # type: ignore[arg-type]
    label = Label("k8s", "app", "web")  # type: ignore[arg-type]
    assert label.source is LabelSource.K8S


def test_any_source_term_matches_every_source() -> None:
    term = parse_select_label("app=web")
    assert term.matches(parse_label("k8s:app=web"))
    assert term.matches(parse_label("container:app=web"))
    assert not term.matches(parse_label("k8s:app=db"))
    specific = parse_select_label("k8s:app=web")
    assert specific.matches(parse_label("k8s:app=web"))
    assert not specific.matches(parse_label("container:app=web"))


def test_to_dict_is_policy_label_form() -> None:
    assert parse_label("name=l3-rule").to_dict() == {
        "key": "name",
        "value": "l3-rule",
        "source": "unspec",
    }
