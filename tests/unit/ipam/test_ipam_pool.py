"""Pool arithmetic: which addresses are allocatable, what the router is."""

from __future__ import annotations

import ipaddress

import pytest

from cilium_py.errors import InvalidInput
from cilium_py.ipam import Pool


def test_ipv4_pool_reserves_network_router_broadcast() -> None:
    pool = Pool.parse("10.1.0.0/29", 4)
    assert pool.router == ipaddress.ip_address("10.1.0.1")
    assert pool.total == 5  # .2 .. .6
    allocatable = [str(a) for a in pool.network if pool.is_allocatable(a)]
    assert allocatable == [f"10.1.0.{i}" for i in range(2, 7)]


def test_ipv6_pool_keeps_last_address() -> None:
    pool = Pool.parse("fd10:1::/125", 6)
    assert pool.router == ipaddress.ip_address("fd10:1::1")
    assert pool.total == 6  # ::2 .. ::7
    assert pool.is_allocatable(ipaddress.ip_address("fd10:1::7"))


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("10.1.0.0/31", 4),
        ("10.1.0.1/24", 4),  # host bits set
        ("fd10::/64", 4),  # wrong family
        ("10.1.0.0/24", 6),
        ("not-a-prefix", 4),
        ("fd10::/127", 6),
        ("127.0.0.0/8", 4),
        ("169.254.0.0/16", 4),
        ("224.0.0.0/24", 4),
        ("fe80::/64", 6),
        ("::/0", 6),
    ],
)
def test_bad_pools_are_refused(text: str, family: int) -> None:
    with pytest.raises(InvalidInput):
        Pool.parse(text, family)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.0.0", "network"),
        ("10.1.0.1", "router"),
        ("10.1.0.7", "broadcast"),
        ("10.1.1.2", "outside"),
    ],
)
def test_requested_address_checks_name_the_problem(address: str, reason: str) -> None:
    pool = Pool.parse("10.1.0.0/29", 4)
    with pytest.raises(InvalidInput, match=reason):
        pool.check_requested(ipaddress.ip_address(address))
