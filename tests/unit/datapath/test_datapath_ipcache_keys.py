"""ipcache LPM keys (pure, no kernel)."""

from __future__ import annotations

import ipaddress

import pytest

from cilium_py.datapath import ipcache
from cilium_py.datapath.maps import AF_INET, AF_INET6, IPCACHE_PREFIX_BASE


def test_prefix_length_counts_the_family_bytes() -> None:
    key = ipcache.ipcache_key(ipcache.parse_prefix("198.51.100.0/24"))
    assert (key.prefixlen, key.family) == (IPCACHE_PREFIX_BASE + 24, AF_INET)
    assert bytes(key.addr) == bytes([198, 51, 100, 0]) + bytes(12)
    key6 = ipcache.ipcache_key(ipcache.parse_prefix("fd10:200::5"))
    assert (key6.prefixlen, key6.family) == (IPCACHE_PREFIX_BASE + 128, AF_INET6)


@pytest.mark.parametrize("text", ["10.200.0.5/32", "198.51.100.0/24", "0.0.0.0/0",
                                  "fd10:200::5/128", "2001:db8::/32"])
def test_round_trip(text: str) -> None:
    prefix = ipaddress.ip_network(text)
    assert ipcache.prefix_of(ipcache.ipcache_key(prefix)) == prefix


def test_parse_accepts_bare_addresses_and_clears_host_bits() -> None:
    assert str(ipcache.parse_prefix("10.0.0.5")) == "10.0.0.5/32"
    assert str(ipcache.parse_prefix(" 10.1.2.3/24 ")) == "10.1.2.0/24"
    with pytest.raises(ValueError, match="not an address"):
        ipcache.parse_prefix("10.0.0.300")


def test_wanted_entries() -> None:
    wanted = ipcache.wanted_entries({"10.200.0.5/32": 256, "10.200.0.1": 1,
                                     "198.51.100.0/24": 300})
    assert sorted(ident for _, ident in wanted.values()) == [1, 256, 300]
    # the same prefix spelled twice is fine when it agrees...
    assert len(ipcache.wanted_entries({"10.0.0.1": 5, "10.0.0.1/32": 5})) == 1
    # ...and an error when it does not
    with pytest.raises(ValueError, match="twice"):
        ipcache.wanted_entries({"10.0.0.1": 5, "10.0.0.1/32": 6})
    with pytest.raises(ValueError, match="out of range"):
        ipcache.wanted_entries({"10.0.0.1": 0})
