"""Resolved policies as cpy_policy entries and endpoint flags (pure, no kernel)."""

from __future__ import annotations

import pytest

from cilium_py.datapath import policy as pol
from cilium_py.datapath.maps import (
    EP_F_EGRESS_ENFORCED,
    EP_F_INGRESS_ENFORCED,
    EP_POLICY_FLAGS_MASK,
    EP_SHAPES_EGRESS_SHIFT,
    EP_SHAPES_INGRESS_SHIFT,
    POLICY_ACTION_ALLOW,
    POLICY_ACTION_REDIRECT,
    POLICY_EGRESS,
    POLICY_INGRESS,
    PolicyKey,
    ntohs,
)
from cilium_py.labels import LabelSet
from cilium_py.policy import (
    Action,
    Direction,
    DirectionPolicy,
    Protocol,
    ResolvedPolicy,
    Verdict,
    parse_policy,
    resolve_policy,
)
from cilium_py.policy import PolicyKey as RulesKey


def entry(identity: int, port: int, protocol: int, direction: int = POLICY_INGRESS,
          **kw: int) -> pol.Entry:
    return pol.Entry(direction=direction, identity=identity, port=port, protocol=protocol, **kw)


@pytest.mark.parametrize(("identity", "port", "protocol", "shape"), [
    (1001, 80, 6, pol.SHAPE_ID_PORT_PROTO),
    (1001, 80, 0, pol.SHAPE_ID_PORT),
    (1001, 0, 0, pol.SHAPE_ID),
    (0, 80, 17, pol.SHAPE_PORT_PROTO),
    (0, 80, 0, pol.SHAPE_PORT),
    (0, 0, 0, pol.SHAPE_ANY),
    (1001, 0, 6, None),  # no lookup tries a protocol without a port
])
def test_shapes_follow_the_lookup_order(identity: int, port: int, protocol: int,
                                        shape: int | None) -> None:
    assert entry(identity, port, protocol).shape == shape


def test_key_is_network_order_port_and_value_host_order_proxy() -> None:
    e = entry(1001, 8080, 6, action=POLICY_ACTION_REDIRECT, proxy_port=10001)
    key = e.key(42)
    assert bytes(key) == (42).to_bytes(4, "little") + (1001).to_bytes(4, "little") + \
        (8080).to_bytes(2, "big") + bytes([6, POLICY_INGRESS])
    assert bytes(e.value()) == (10001).to_bytes(2, "little") + bytes([POLICY_ACTION_REDIRECT, 0])
    assert pol.entry_from_map(key, e.value()) == e


def test_to_dict_names_direction_protocol_and_action() -> None:
    assert entry(0, 53, 17, POLICY_EGRESS).to_dict() == {
        "direction": "egress", "identity": 0, "port": 53, "protocol": "UDP",
        "action": "allow", "proxy_port": 0}


def test_flags_carry_enforcement_and_shapes_per_direction() -> None:
    entries = [entry(1001, 0, 0), entry(0, 80, 6), entry(0, 0, 0, POLICY_EGRESS)]
    flags = pol.policy_flags(True, False, entries)
    assert flags == EP_F_INGRESS_ENFORCED | (
        (pol.SHAPE_ID | pol.SHAPE_PORT_PROTO) << EP_SHAPES_INGRESS_SHIFT) | (
        pol.SHAPE_ANY << EP_SHAPES_EGRESS_SHIFT)
    assert flags & ~EP_POLICY_FLAGS_MASK == 0
    assert pol.flags_dict(flags | EP_F_EGRESS_ENFORCED) == {
        "ingress_enforced": True, "egress_enforced": True}


def _resolved(ingress: dict | None, egress: dict | None = None) -> ResolvedPolicy:
    def direction(d: Direction, entries: dict | None) -> DirectionPolicy:
        return DirectionPolicy(d, entries is not None, {
            RulesKey(i, p, Protocol(pr), d): v for (i, p, pr), v in (entries or {}).items()})

    return ResolvedPolicy(LabelSet(), direction(Direction.INGRESS, ingress),
                          direction(Direction.EGRESS, egress))


def test_resolved_entries_of_both_directions() -> None:
    allow, redirect = Verdict(Action.ALLOW), Verdict(Action.REDIRECT)
    res = _resolved({(1001, 80, 6): allow, (0, 53, 17): redirect}, {(2, 0, 0): allow})
    assert sorted(pol.resolved_entries(res)) == sorted([
        entry(1001, 80, 6),
        entry(0, 53, 17, action=POLICY_ACTION_REDIRECT),
        entry(2, 0, 0, POLICY_EGRESS),
    ])


def test_unenforced_direction_writes_nothing() -> None:
    res = _resolved(None, None)
    assert pol.resolved_entries(res) == []
    assert pol.resolved_flags(res, []) == 0


def test_entries_of_the_real_resolver() -> None:
    rules = parse_policy([{
        "endpointSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    }])
    identities = {1001: LabelSet.parse(["container:app=client"]),
                  1002: LabelSet.parse(["container:app=server"])}
    res = resolve_policy(rules, LabelSet.parse(["container:app=server"]), identities)
    entries = pol.resolved_entries(res)
    assert entry(1001, 80, 6) in entries
    assert entry(1, 0, 0) in entries  # the host may always reach its endpoints
    flags = pol.resolved_flags(res, entries)
    assert flags & EP_F_INGRESS_ENFORCED and not flags & EP_F_EGRESS_ENFORCED
    assert all(e.action == POLICY_ACTION_ALLOW for e in entries)


def test_out_of_range_entries_are_refused() -> None:
    res = _resolved({(2**32, 0, 0): Verdict(Action.ALLOW)})
    with pytest.raises(ValueError, match="identity"):
        pol.resolved_entries(res)


def test_diff_writes_new_and_changed_and_deletes_the_rest() -> None:
    ep = 7
    old = [entry(1001, 80, 6), entry(1002, 0, 0), entry(0, 53, 17)]
    current = {bytes(e.key(ep)): e for e in old}
    new = [entry(1001, 80, 6), entry(1002, 0, 0, action=POLICY_ACTION_REDIRECT),
           entry(0, 443, 6)]
    diff = pol.diff_entries(ep, current, new)
    assert (diff.added, diff.changed, len(diff.delete)) == (1, 1, 1)
    assert set(diff.write.values()) == {new[1], new[2]}
    assert [ntohs(PolicyKey.from_buffer_copy(k).dport) for k in diff.delete] == [53]
    assert pol.diff_entries(ep, current, old).empty
