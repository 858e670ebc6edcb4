"""Node-wide build options: a datapath with a family turned off (``--ipv6-pool none`` or
``--ipv4-pool none`` in the agent) still lets the node's and the container's own
neighbour discovery and MLD through, and drops every other packet of that family in
both directions as ``family-disabled`` (issue 10: it used to enter containers unfiltered)."""

from __future__ import annotations

import pytest

from tests.support import netns as tn

pytestmark = pytest.mark.kernel


def test_ipv4_only_datapath(node_topology: tn.NodeTopology) -> None:
    topo = node_topology
    ep1, ep2 = topo.endpoints
    with tn.bpf_root() as bpf_root, tn.NetnsWorker(topo.node) as node:
        node.call(tn.datapath_start, bpf_root, topo.endpoints, ipv6=False, ct_size=1024,
                  endpoint_size=16, timeout=120)
        try:
            assert tn.run_in_netns(ep1.netns, tn.ping, ep2.ipv4, 2) == 2
            before = node.call(tn.datapath_call, "drop_counters")
            assert tn.run_in_netns(ep1.netns, tn.ping, ep2.ipv6, 2, 0.3) == 0
            # The node pings ep1: its neighbour solicitation is answered (ND passes),
            # the echo request, ordinary IPv6, never enters ep1.
            assert tn.run_in_netns(topo.node, tn.ping, ep1.ipv6, 1, 0.3) == 0
            neigh = tn.ip(topo.node, "-6", "neigh", "show", ep1.ipv6, "dev", ep1.host_ifname)
            assert ep1.mac in neigh, neigh
            after = node.call(tn.datapath_call, "drop_counters")
            assert after["family-disabled"] - before["family-disabled"] == 3
            assert after["invalid-source-ip"] == before["invalid-source-ip"] == 0
            assert {r["family"] for r in node.call(tn.datapath_call, "ct_entries")} == {"ipv4"}
        finally:
            node.call(tn.datapath_call, "close")


@pytest.mark.parametrize("off", ["ipv4", "ipv6"])
def test_disabled_family_never_enters_a_container(node_topology: tn.NodeTopology,
                                                  off: str) -> None:
    topo = node_topology
    ep1, ep2 = topo.endpoints
    on = "ipv6" if off == "ipv4" else "ipv4"
    with tn.bpf_root() as bpf_root, tn.NetnsWorker(topo.node) as node, \
            tn.NetnsWorker(ep1.netns) as inside:
        node.call(tn.datapath_start, bpf_root, topo.endpoints, **{off: False}, ct_size=1024,
                  endpoint_size=16, timeout=120)
        try:
            node.call(tn.drop_events_clear)
            before = node.call(tn.datapath_call, "drop_counters")
            inside.call(tn.udp_listen_start, "::" if off == "ipv6" else "0.0.0.0", 9999)
            # From the node itself (to_container) and from another endpoint (from_container).
            tn.run_in_netns(topo.node, tn.udp_send, getattr(ep1, off), 9999, b"from-node")
            tn.run_in_netns(ep2.netns, tn.udp_send, getattr(ep1, off), 9999, b"from-ep2")
            got = inside.call(tn.udp_listen_result, 9999, 1.0)
            assert got == [], f"{off} entered the container with {off} turned off: {got}"
            after = node.call(tn.datapath_call, "drop_counters")
            assert after["family-disabled"] - before["family-disabled"] >= 2
            ev = tn.find_drop_event(node, reason_name="family-disabled", dst=getattr(ep1, off),
                                    dport=9999, direction="to-container")
            assert ev is not None, node.call(tn.drop_events)
            # The family that is on still works.
            assert tn.run_in_netns(ep2.netns, tn.ping, getattr(ep1, on), 1) == 1
        finally:
            node.call(tn.datapath_call, "close")
