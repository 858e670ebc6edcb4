"""Node-wide build options: an IPv4-only datapath still lets link-local IPv6
(neighbour discovery, MLD) through and drops other IPv6 as unsupported."""

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
            # only the echo reply, ordinary IPv6, is dropped.
            assert tn.run_in_netns(topo.node, tn.ping, ep1.ipv6, 1, 0.3) == 0
            neigh = tn.ip(topo.node, "-6", "neigh", "show", ep1.ipv6, "dev", ep1.host_ifname)
            assert ep1.mac in neigh, neigh
            after = node.call(tn.datapath_call, "drop_counters")
            assert after["unsupported-l3"] - before["unsupported-l3"] == 3
            assert after["invalid-source-ip"] == before["invalid-source-ip"] == 0
            assert {r["family"] for r in node.call(tn.datapath_call, "ct_entries")} == {"ipv4"}
        finally:
            node.call(tn.datapath_call, "close")
