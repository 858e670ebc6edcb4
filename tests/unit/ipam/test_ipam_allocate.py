"""Allocation semantics of one IPAM instance over the embedded store."""

from __future__ import annotations

import ipaddress

import pytest

from cilium_py.errors import Conflict, InvalidInput, PoolExhausted
from cilium_py.ipam import DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL, IPAM
from cilium_py.store import Store


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_defaults_are_dual_stack(store: Store) -> None:
    ipam = IPAM(store)
    assert ipam.families == (4, 6)
    assert str(ipam.pool(4)) == DEFAULT_IPV4_POOL
    assert str(ipam.pool(6)) == DEFAULT_IPV6_POOL
    assert ipam.router(4) == ip("10.200.0.1")
    assert ipam.router(6) == ip("fd10:200::1")
    a4 = ipam.allocate(4, "ep1")
    a6 = ipam.allocate(6, "ep1")
    assert a4 == ip("10.200.0.2") and a6 == ip("fd10:200::2")
    assert ipam.allocations() == {"10.200.0.2": "ep1", "fd10:200::2": "ep1"}


def test_exhaustion_on_tiny_pool(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/29", None)
    got = {ipam.allocate(4, f"ep{i}") for i in range(5)}
    assert got == {ip(f"10.9.0.{i}") for i in range(2, 7)}
    with pytest.raises(PoolExhausted, match="10.9.0.0/29"):
        ipam.allocate(4, "one-too-many")
    status = ipam.status()["ipv4"]
    assert status == {
        "enabled": True,
        "pool": "10.9.0.0/29",
        "router": "10.9.0.1",
        "used": 5,
        "free": 0,
        "total": 5,
    }


def test_same_owner_gets_same_address(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    first = ipam.allocate(4, "ep")
    assert ipam.allocate(4, "ep") == first
    assert ipam.allocate(4, "ep", str(first)) == first
    assert len(ipam.allocations()) == 1


def test_requested_address_is_honoured(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    assert ipam.allocate(4, "ep", "10.9.0.77") == ip("10.9.0.77")
    assert ipam.allocate(6, "ep", "fd10:9::ab") == ip("fd10:9::ab")
    assert ipam.owner_of("10.9.0.77") == "ep"
    # the cursor-driven allocation skips an address taken by request
    assert ipam.allocate(4, "other") == ip("10.9.0.2")


def test_requested_address_taken_by_other_owner_conflicts(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    taken = ipam.allocate(4, "first")
    with pytest.raises(Conflict, match="first") as err:
        ipam.allocate(4, "second", str(taken))
    assert err.value.status == 409
    assert ipam.owner_of(taken) == "first"


def test_owner_cannot_hold_two_addresses_of_a_family(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    ipam.allocate(4, "ep")
    with pytest.raises(Conflict, match="already holds"):
        ipam.allocate(4, "ep", "10.9.0.50")
    assert ipam.owner_of("10.9.0.50") is None


@pytest.mark.parametrize(
    "requested",
    ["10.9.0.0", "10.9.0.1", "10.9.0.255", "10.10.0.5", "fd10:9::5", "nonsense"],
)
def test_requested_address_invalid(store: Store, requested: str) -> None:
    ipam = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    with pytest.raises(InvalidInput) as err:
        ipam.allocate(4, "ep", requested)
    assert err.value.status == 400
    assert ipam.allocations() == {}


def test_release_and_reuse(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/30", None)  # exactly one endpoint address
    only = ipam.allocate(4, "a")
    with pytest.raises(PoolExhausted):
        ipam.allocate(4, "b")
    assert ipam.release(only) is True
    assert ipam.release(only) is False  # harmless twice
    assert ipam.allocate(4, "b") == only
    assert ipam.owner_of(only) == "b"


def test_release_with_wrong_owner_keeps_allocation(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    addr = ipam.allocate(4, "a")
    assert ipam.release(addr, owner="b") is False
    assert ipam.owner_of(addr) == "a"
    assert ipam.release(str(addr), owner="a") is True


def test_released_address_is_reused_last(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/28", None)
    first = ipam.allocate(4, "a")
    ipam.release(first)
    assert ipam.allocate(4, "b") != first


def test_release_owner_frees_both_families(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    ipam.allocate(4, "gone")
    ipam.allocate(6, "gone")
    kept = ipam.allocate(4, "kept")
    released = ipam.release_owner("gone")
    assert sorted(map(str, released)) == ["10.9.0.2", "fd10:9::2"]
    assert ipam.allocations() == {str(kept): "kept"}
    assert ipam.release_owner("gone") == []
    # the owner starts afresh: no stale index sends it back to the old address
    assert ipam.allocate(4, "gone") != kept


def test_ipv4_only(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    assert ipam.families == (4,)
    assert ipam.router(6) is None and ipam.pool(6) is None
    with pytest.raises(InvalidInput, match="IPv6 is disabled"):
        ipam.allocate(6, "ep")
    assert ipam.status()["ipv6"] == {"enabled": False}


def test_ipv6_only(store: Store) -> None:
    ipam = IPAM(store, None, "fd10:9::/120")
    assert ipam.families == (6,)
    assert ipam.allocate(6, "ep") == ip("fd10:9::2")
    with pytest.raises(InvalidInput, match="IPv4 is disabled"):
        ipam.allocate(4, "ep")
    assert ipam.status()["ipv6"]["used"] == 1


def test_no_family_at_all_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        IPAM(store, None, None)


def test_bad_family_and_owner(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    with pytest.raises(InvalidInput):
        ipam.allocate(5, "ep")
    with pytest.raises(InvalidInput):
        ipam.allocate(4, "")


def test_state_survives_restart(store: Store) -> None:
    first = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    a = first.allocate(4, "a")
    b = first.allocate(6, "b")
    again = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    assert again.allocate(4, "a") == a
    assert again.allocate(6, "b") == b
    assert again.allocate(4, "c") not in {a}


def test_instances_sharing_a_store_never_collide(store: Store) -> None:
    """A stale in-memory hint is corrected by the store's create-if-absent."""
    one = IPAM(store, "10.9.0.0/29", None)
    two = IPAM(store, "10.9.0.0/29", None)
    got = [one.allocate(4, "a"), two.allocate(4, "b"), one.allocate(4, "c")]
    got += [two.allocate(4, "d"), one.allocate(4, "e")]
    assert len(set(got)) == 5
    with pytest.raises(PoolExhausted):
        two.allocate(4, "f")
    # a release by one instance is seen by the other once its hint says "full"
    one.release(got[0])
    assert two.allocate(4, "f") == got[0]


def test_index_is_repaired_after_crash_between_writes(store: Store) -> None:
    """A claim written without its owner index (crash) is found again on start."""
    ipam = IPAM(store, "10.9.0.0/24", None)
    addr = ipam.allocate(4, "ep")
    store.delete("cilium-py/ipam/v4/owner/ep")
    restarted = IPAM(store, "10.9.0.0/24", None)
    assert restarted.allocate(4, "ep") == addr


def test_separate_prefixes_are_independent(store: Store) -> None:
    node1 = IPAM(store, "10.9.0.0/24", None, prefix="cilium-py/ipam/node1")
    node2 = IPAM(store, "10.9.0.0/24", None, prefix="cilium-py/ipam/node2/")
    assert node1.allocate(4, "x") == node2.allocate(4, "y")
