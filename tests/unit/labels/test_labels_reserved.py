"""Reserved identities and the labels of CIDR identities."""

import ipaddress

from cilium_py.labels import (
    MIN_USER_IDENTITY,
    RESERVED_LABELS,
    LabelSet,
    ReservedIdentity,
    cidr_identity_labels,
    cidr_label,
    cidr_prefix,
    is_reserved,
    is_user,
    reserved_identity_of,
)


def test_reserved_numbers_and_labels() -> None:
    expected = {1: "reserved:host", 2: "reserved:world", 3: "reserved:cluster",
                4: "reserved:health", 5: "reserved:init",
                6: "reserved:remote-node"}  # fmt: skip
    assert {int(k): v.canonical() for k, v in RESERVED_LABELS.items()} == expected
    assert ReservedIdentity.HOST == 1 and ReservedIdentity.INIT == 5
    assert MIN_USER_IDENTITY == 256


def test_reserved_identity_lookup() -> None:
    assert reserved_identity_of(LabelSet.parse(["reserved:world"])) is ReservedIdentity.WORLD
    assert reserved_identity_of(LabelSet.parse(["reserved:world", "app=x"])) is None
    assert reserved_identity_of(LabelSet.parse(["app=x"])) is None


def test_identity_ranges() -> None:
    assert all(is_reserved(i) for i in range(1, 7))
    assert not is_reserved(0) and not is_reserved(7) and not is_reserved(256)
    assert is_user(256) and not is_user(255) and not is_user(1)


def test_cidr_identity_labels() -> None:
    labels = cidr_identity_labels("198.51.100.7/24")
    assert labels.strings() == ["cidr:198.51.100.0/24", "reserved:world"]
    assert cidr_prefix(labels) == ipaddress.ip_network("198.51.100.0/24")
    assert cidr_prefix(LabelSet.parse(["reserved:world"])) is None


def test_cidr_prefix_prefers_the_longest() -> None:
    labels = LabelSet([cidr_label("10.0.0.0/8"), cidr_label("10.1.0.0/16")])
    assert cidr_prefix(labels) == ipaddress.ip_network("10.1.0.0/16")
    v6 = cidr_identity_labels("2001:db8::/32")
    assert cidr_prefix(v6) == ipaddress.ip_network("2001:db8::/32")
    assert LabelSet.from_canonical(v6.canonical()) == v6
