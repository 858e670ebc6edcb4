"""BPF toolchain smoke test: bcc compiles, tc attaches, the program sees packets.

Two test-made namespaces joined by a veth; the smoke program runs on ingress of
one end while the other end pings it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest

from tests.support import netns as tn

pytestmark = pytest.mark.kernel

ADDR_A = "10.201.0.1"
ADDR_B = "10.201.0.2"


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ns_a = tn.create_netns(tn.unique_name())
    ns_b = None
    try:
        ns_b = tn.create_netns(tn.unique_name())
        tn.add_veth(ns_a, "smk0", ns_b, "smk1")
        tn.ip(ns_a, "addr", "add", f"{ADDR_A}/24", "dev", "smk0")
        tn.ip(ns_b, "addr", "add", f"{ADDR_B}/24", "dev", "smk1")
        yield ns_a, ns_b
    finally:
        tn.delete_netns(ns_a)
        if ns_b:
            tn.delete_netns(ns_b)


def _smoke_in_netns(ifname: str, ping_from: str, count: int) -> dict:
    from cilium_py.datapath.smoke import smoke_test

    during = functools.partial(tn.run_in_netns, ping_from, tn.ping, ADDR_A, count)
    return smoke_test(ifname, during=during)


def test_smoke_counts_packets_across_veth(veth_pair: tuple[str, str]) -> None:
    ns_a, ns_b = veth_pair
    result = tn.run_in_netns(ns_a, _smoke_in_netns, "smk0", ns_b, 5, timeout=60)

    assert result["attached"], result
    assert result["direct_action"], result
    assert result["detached"], result
    assert result["created_clsact"] and not result["clsact_left"], result
    # 5 echo requests arrive on smk0's ingress (plus ARP for the first one).
    assert result["packets"] >= 5, result
    assert result["bytes"] >= 5 * 50, result  # each echo frame is ~59 bytes
