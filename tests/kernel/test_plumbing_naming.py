"""Interface naming rules (pure functions; no kernel needed)."""

from __future__ import annotations

import pytest

from cilium_py.endpoint.naming import check_ifname, host_ifname
from cilium_py.errors import InvalidInput


def test_host_ifname_is_stable_short_and_distinct() -> None:
    name = host_ifname("container-abc")
    assert name == host_ifname("container-abc")
    assert name.startswith("lxc") and len(name) == 15
    names = {host_ifname(f"ep{i}") for i in range(10_000)}
    assert len(names) == 10_000
    assert len(host_ifname("x" * 128)) == 15


def test_host_ifname_needs_an_id() -> None:
    with pytest.raises(InvalidInput):
        host_ifname("")


@pytest.mark.parametrize("name", ["eth0", "net1", "e", "a_b-c.d", "x" * 15])
def test_good_names(name: str) -> None:
    assert check_ifname(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 16, "eth 0", "a/b", "a:b", "-x", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_ifname(name)
