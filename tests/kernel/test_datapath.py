"""The endpoint datapath with real traffic, in test-made namespaces.

One node namespace (gateway 10.200.0.1 / fd10:200::1 on a device there) and
two endpoint namespaces joined to it by veths, built once for the module; a
worker process inside the node runs the Datapath (compiled once) with both
endpoints attached. Each test sends traffic between the namespaces and checks
the maps, counters and drop events.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.datapath.maps import link_local_from_mac
from tests.support import netns as tn
from tests.support.waiting import poll

pytestmark = pytest.mark.kernel


@dataclass
class Node:
    topo: tn.NodeTopology
    dp: tn.NetnsWorker  # worker in the node namespace, running the Datapath
    bpf_root: str
    prog_ids: dict[str, int]

    def call(self, method: str, *args: Any) -> Any:
        return self.dp.call(tn.datapath_call, method, *args)

    @property
    def ep1(self) -> tn.EndpointNs:
        return self.topo.endpoints[0]

    @property
    def ep2(self) -> tn.EndpointNs:
        return self.topo.endpoints[1]

    def forwarded(self) -> tuple[int, int]:
        """Packets the node's IP stack forwarded (IPv4, IPv6)."""
        v4 = self.dp.call(tn.read_snmp, "Ip")["ForwDatagrams"]
        v6 = self.dp.call(tn.read_snmp6)["Ip6OutForwDatagrams"]
        return v4, v6

    def metric(self, name: str) -> int:
        return self.call("metrics")[name]["packets"]

    def drops(self, reason: str) -> int:
        return self.call("drop_counters")[reason]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = tn.build_node(2)
    bpf_root = os.path.join(tn.BPFFS, tn.unique_name())
    worker = None
    try:
        worker = tn.NetnsWorker(topo.node)
        started = worker.call(tn.datapath_start, bpf_root, topo.endpoints,
                              ct_size=8192, endpoint_size=256, timeout=120)
        yield Node(topo, worker, bpf_root, started["prog_ids"])
    finally:
        if worker is not None:
            try:
                worker.call(tn.datapath_call, "purge")
            finally:
                worker.close()
        topo.cleanup()
        tn.remove_pins(bpf_root)


def find_event(node: Node, **match: Any) -> dict[str, Any] | None:
    return tn.find_drop_event(node.dp, **match)


def test_programs_and_entries_in_place(node: Node) -> None:
    for ep in (node.ep1, node.ep2):
        assert node.call("attachment", ep.host_ifindex) == {
            "ingress": node.prog_ids["from_container"],
            "egress": node.prog_ids["to_container"],
        }
    rows = {r["address"]: r for r in node.call("endpoint_entries")}
    for ep in (node.ep1, node.ep2):
        for addr in (ep.ipv4, ep.ipv6):
            assert rows[addr]["ifindex"] == ep.host_ifindex
            assert rows[addr]["endpoint_id"] == ep.endpoint_id
            assert rows[addr]["identity"] == ep.identity
            assert rows[addr]["mac"] == ep.mac
            assert rows[addr]["host_mac"] == ep.host_mac
            assert rows[addr]["configured"]
    configs = node.call("endpoint_configs")
    assert configs[node.ep1.host_ifindex]["ipv4"] == node.ep1.ipv4
    assert configs[node.ep1.host_ifindex]["ipv6"] == node.ep1.ipv6


def test_ping_between_endpoints_bypasses_host_stack(node: Node) -> None:
    fwd_before = node.forwarded()
    local_before = node.metric("from-endpoint-local-delivery")

    assert tn.run_in_netns(node.ep1.netns, tn.ping, node.ep2.ipv4, 3) == 3
    assert tn.run_in_netns(node.ep1.netns, tn.ping, node.ep2.ipv6, 3) == 3
    assert tn.run_in_netns(node.ep2.netns, tn.ping, node.ep1.ipv4, 2) == 2

    # Requests and replies were redirected by BPF, the node forwarded nothing.
    assert node.forwarded() == fwd_before
    assert node.metric("from-endpoint-local-delivery") - local_before >= 16


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_transfer_between_endpoints(node: Node, family: str) -> None:
    port = 5001 if family == "ipv4" else 5002
    dst = getattr(node.ep2, family)
    src = getattr(node.ep1, family)
    payload = os.urandom(256 * 1024)
    fwd_before = node.forwarded()

    with tn.NetnsWorker(node.ep2.netns) as sink:
        sink.call(tn.tcp_sink_start, dst, port)
        ack = tn.run_in_netns(node.ep1.netns, tn.tcp_send, dst, port, payload)
        result = sink.call(tn.tcp_sink_result, port)

    assert result["error"] is None
    assert result["data"] == payload
    assert ack == b"OK %d" % len(payload)
    assert node.forwarded() == fwd_before

    # Direct delivery keeps one entry for both sides ("local"), which saw the
    # data, the replies and both FINs.
    flows = [r for r in node.call("ct_entries")
             if r["protocol"] == "tcp" and r["dport"] == port and r["src"] == src]
    assert len(flows) == 1, flows
    row = flows[0]
    assert row["direction"] == "egress"
    assert row["dst"] == dst
    assert {"local", "seen-reply", "tx-closing", "rx-closing"} <= set(row["flags"])
    assert row["tx_bytes"] > len(payload)
    assert row["rx_packets"] > 0
    assert row["expires_in"] > 0
    assert row["src_identity"] == node.ep1.identity


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_direct_delivery_looks_routed(node: Node, family: str) -> None:
    """The receiver sees what a router would hand it: TTL / hop limit one less."""
    dst = getattr(node.ep2, family)
    with tn.NetnsWorker(node.ep2.netns) as receiver:
        receiver.call(tn.udp_ttl_listen_start, dst, 9997)
        tn.run_in_netns(node.ep1.netns, tn.udp_send, dst, 9997, b"ttl")
        got = receiver.call(tn.udp_ttl_listen_result, 9997)
    assert got == [(b"ttl", 63)]


def test_endpoint_reaches_gateway_through_host_stack(node: Node) -> None:
    to_stack = node.metric("from-endpoint-to-stack")
    to_ep = node.metric("to-endpoint-from-stack")

    assert tn.run_in_netns(node.ep1.netns, tn.ping, node.topo.gw4, 3) == 3
    assert tn.run_in_netns(node.ep1.netns, tn.ping, node.topo.gw6, 3) == 3

    assert node.metric("from-endpoint-to-stack") - to_stack >= 6
    assert node.metric("to-endpoint-from-stack") - to_ep >= 6
    gw_flows = [r for r in node.call("ct_entries") if r["dst"] in (node.topo.gw4, node.topo.gw6)]
    assert {r["family"] for r in gw_flows} == {"ipv4", "ipv6"}
    assert all(r["direction"] == "egress" and "seen-reply" in r["flags"] for r in gw_flows)


def test_forged_source_ip_is_dropped_and_reported(node: Node) -> None:
    ep1, ep2 = node.ep1, node.ep2
    forged4, forged6 = "10.200.1.99", "fd10:200:1::99"
    before = node.drops("invalid-source-ip")
    tn.ip(ep1.netns, "addr", "add", f"{forged4}/32", "dev", ep1.ifname)
    tn.ip(ep1.netns, "addr", "add", f"{forged6}/128", "dev", ep1.ifname, "nodad")
    try:
        with tn.NetnsWorker(ep2.netns) as receiver:
            receiver.call(tn.udp_listen_start, ep2.ipv4, 9999)
            tn.run_in_netns(ep1.netns, tn.udp_send, ep2.ipv4, 9999, b"forged", forged4)
            tn.run_in_netns(ep1.netns, tn.udp_send, ep2.ipv6, 9999, b"forged", forged6)
            assert receiver.call(tn.udp_listen_result, 9999) == []
    finally:
        tn.ip(ep1.netns, "addr", "del", f"{forged4}/32", "dev", ep1.ifname, check=False)
        tn.ip(ep1.netns, "addr", "del", f"{forged6}/128", "dev", ep1.ifname, check=False)

    assert node.drops("invalid-source-ip") - before >= 2
    ev = find_event(node, reason_name="invalid-source-ip", src=forged4)
    assert ev is not None, node.dp.call(tn.drop_events)
    assert ev["reason"] == 2
    assert ev["dst"] == ep2.ipv4
    assert ev["family"] == "ipv4"
    assert (ev["protocol"], ev["dport"]) == (17, 9999)
    assert ev["endpoint_id"] == ep1.endpoint_id
    assert ev["src_identity"] == ep1.identity
    assert ev["ifindex"] == ep1.host_ifindex
    assert ev["direction"] == "from-container"
    ev6 = find_event(node, reason_name="invalid-source-ip", src=forged6)
    assert ev6 is not None and ev6["dst"] == ep2.ipv6 and ev6["family"] == "ipv6"


def test_forged_source_mac_is_dropped_valid_frame_delivered(node: Node) -> None:
    ep1, ep2 = node.ep1, node.ep2
    bad_mac = "02:00:00:00:00:99"
    good = tn.ipv4_udp_frame(ep1.mac, ep1.host_mac, ep1.ipv4, ep2.ipv4, 1234, 9998, b"good")
    bad = tn.ipv4_udp_frame(bad_mac, ep1.host_mac, ep1.ipv4, ep2.ipv4, 1234, 9998, b"bad")
    before = node.drops("invalid-source-mac")

    with tn.NetnsWorker(ep2.netns) as receiver:
        receiver.call(tn.udp_listen_start, ep2.ipv4, 9998)
        tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, bad, 2)
        tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, good, 1)
        got = receiver.call(tn.udp_listen_result, 9998)

    assert got == [(b"good", ep1.ipv4)]
    assert node.drops("invalid-source-mac") - before == 2
    ev = find_event(node, reason_name="invalid-source-mac", src_mac=bad_mac)
    assert ev is not None
    assert (ev["src"], ev["dst"], ev["sport"], ev["dport"]) == (ep1.ipv4, ep2.ipv4, 1234, 9998)
    udp = [r for r in node.call("ct_entries") if r["protocol"] == "udp" and r["dport"] == 9998]
    assert [(r["direction"], r["sport"], r["src"]) for r in udp] == [("egress", 1234, ep1.ipv4)]
    assert "local" in udp[0]["flags"]


def test_arp_spoofing_is_dropped(node: Node) -> None:
    ep1, ep2 = node.ep1, node.ep2
    before_ip = node.drops("invalid-source-ip")
    before_mac = node.drops("invalid-source-mac")
    # ep1 claims ep2's address; then claims its own address with someone else's MAC.
    spoof_ip = tn.arp_frame(ep1.mac, ep1.mac, ep2.ipv4, node.topo.gw4, dst_mac=ep1.host_mac)
    spoof_mac = tn.arp_frame(ep1.mac, "02:00:00:00:00:98", ep1.ipv4, node.topo.gw4,
                             dst_mac=ep1.host_mac)
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, spoof_ip)
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, spoof_mac)

    assert poll(lambda: node.drops("invalid-source-ip") - before_ip == 1)
    assert node.drops("invalid-source-mac") - before_mac == 1
    ev = find_event(node, reason_name="invalid-source-ip", src=ep2.ipv4, eth_proto=0x0806)
    assert ev is not None and ev["dst"] == node.topo.gw4
    # Genuine ARP still works: the node resolves ep1 afresh.
    tn.ip(node.topo.node, "neigh", "flush", "dev", ep1.host_ifname)
    assert tn.run_in_netns(ep1.netns, tn.ping, node.topo.gw4, 1) == 1


def test_detach_removes_entries_and_falls_back_to_host_routing(node: Node) -> None:
    topo = node.topo
    ns3 = tn.create_netns(tn.unique_name())
    topo.namespaces.append(ns3)
    ep3 = tn.add_endpoint(topo.node, ns3, "lxc3", ipv4="10.200.3.1", ipv6="fd10:200:3::1",
                          gw4=topo.gw4, gw6=topo.gw6, endpoint_id=103, identity=1003)
    try:
        node.call("attach_endpoint", ep3.datapath_info())
        local = node.metric("from-endpoint-local-delivery")
        assert tn.run_in_netns(node.ep1.netns, tn.ping, ep3.ipv4, 2) == 2
        assert node.metric("from-endpoint-local-delivery") - local >= 4
        assert any(r["dst"] == ep3.ipv4 for r in node.call("ct_entries"))

        node.call("detach_endpoint", ep3.datapath_info())
        node.call("detach_endpoint", ep3.datapath_info())  # idempotent

        addresses = {r["address"] for r in node.call("endpoint_entries")}
        assert not addresses & {ep3.ipv4, ep3.ipv6}
        assert {node.ep1.ipv4, node.ep2.ipv6} <= addresses
        assert ep3.host_ifindex not in node.call("endpoint_configs")
        assert node.call("attachment", ep3.host_ifindex) == {"ingress": None, "egress": None}
        assert not [r for r in node.call("ct_entries") if ep3.ipv4 in (r["src"], r["dst"])]

        # Without entries for ep3, traffic to it is routed by the node's stack.
        fwd4, _ = node.forwarded()
        assert tn.run_in_netns(node.ep1.netns, tn.ping, ep3.ipv4, 2) == 2
        assert node.forwarded()[0] - fwd4 >= 4

        # Orphans: entries of a veth no endpoint owns go, the others stay.
        node.call("attach_endpoint", ep3.datapath_info())
        keep = {node.ep1.host_ifindex, node.ep2.host_ifindex}
        assert node.call("flush_orphans", keep) == 3  # two addresses + the config
        addresses = {r["address"] for r in node.call("endpoint_entries")}
        assert not addresses & {ep3.ipv4, ep3.ipv6}
        assert len(addresses) == 4
    finally:
        node.call("detach_endpoint", ep3.datapath_info())
        tn.delete_netns(ns3)
        topo.namespaces.remove(ns3)


def test_fragment_without_its_first_fragment_is_dropped(node: Node) -> None:
    """A later fragment carries no ports; with no first fragment to take them from it
    cannot be classified, so it is dropped (and not delivered by id alone)."""
    ep1, ep2 = node.ep1, node.ep2
    before = node.drops("fragment-not-found")
    frame = bytearray(tn.ipv4_udp_frame(ep1.mac, ep1.host_mac, ep1.ipv4, ep2.ipv4, 1234, 9996,
                                        b"x" * 64))
    ip_hdr = frame[14:34]
    ip_hdr[4:6] = (0x4242).to_bytes(2, "big")  # identification
    ip_hdr[6:8] = (185).to_bytes(2, "big")  # offset 1480, last fragment
    ip_hdr[10:12] = b"\0\0"
    ip_hdr[10:12] = tn.inet_checksum(bytes(ip_hdr)).to_bytes(2, "big")
    frame[14:34] = ip_hdr
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, bytes(frame))
    assert poll(lambda: node.drops("fragment-not-found") - before == 1)
    ev = find_event(node, reason_name="fragment-not-found", src=ep1.ipv4)
    assert ev is not None and ev["dst"] == ep2.ipv4


def test_ipv6_extension_header_chains(node: Node) -> None:
    """Headers the walker follows are walked (the datagram arrives); a longer chain
    cannot be classified and is dropped under its own reason."""
    ep1, ep2 = node.ep1, node.ep2
    before = node.call("drop_counters")

    def frame(options: int, payload: bytes) -> bytes:
        return tn.ipv6_udp_frame(ep1.mac, ep1.host_mac, ep1.ipv6, ep2.ipv6, 1235, 9995,
                                 payload, dest_options=options)

    with tn.NetnsWorker(ep2.netns) as receiver:
        receiver.call(tn.udp_listen_start, ep2.ipv6, 9995)
        tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, frame(3, b"three"))
        tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, frame(5, b"five"))
        got = receiver.call(tn.udp_listen_result, 9995)
    assert got == [(b"three", ep1.ipv6)]
    after = node.call("drop_counters")
    assert after["extension-header-chain-too-long"] - before[
        "extension-header-chain-too-long"] == 1
    assert after["invalid-packet"] == before["invalid-packet"]
    ev = find_event(node, reason_name="extension-header-chain-too-long", src=ep1.ipv6)
    assert ev is not None and ev["dst"] == ep2.ipv6


def _icmp6_in(worker: tn.NetnsWorker, kind: str) -> int:
    return worker.call(tn.read_snmp6)[f"Icmp6In{kind}"]


def test_router_advertisements_and_redirects_from_endpoints_are_dropped(node: Node) -> None:
    """Only routers send these: from a container they are dropped, never seen by the
    node (which would otherwise learn prefixes or routes from them)."""
    ep1 = node.ep1
    ll1, host_ll = link_local_from_mac(ep1.mac), link_local_from_mac(ep1.host_mac)
    before = node.drops("forbidden-icmpv6")
    ra_in, redir_in = _icmp6_in(node.dp, "RouterAdvertisements"), _icmp6_in(
        node.dp, "Redirects")
    ra = tn.router_advert(ep1.mac, "33:33:00:00:00:01", ll1, "2001:db8:99::")
    red = tn.redirect(ep1.mac, ep1.host_mac, ll1, host_ll, ll1, node.ep2.ipv6)
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, ra)
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, red)
    assert poll(lambda: node.drops("forbidden-icmpv6") - before == 2)
    assert _icmp6_in(node.dp, "RouterAdvertisements") == ra_in
    assert _icmp6_in(node.dp, "Redirects") == redir_in
    ev = find_event(node, reason_name="forbidden-icmpv6", src=ll1, dst="ff02::1")
    assert ev is not None and ev["protocol"] == 58 and ev["endpoint_id"] == ep1.endpoint_id


def test_neighbour_discovery_only_for_own_addresses(node: Node) -> None:
    """NA/NS name the container's own addresses and MAC, or are dropped; genuine ones
    still reach the node."""
    ep1, ep2 = node.ep1, node.ep2
    ll1, host_ll = link_local_from_mac(ep1.mac), link_local_from_mac(ep1.host_mac)
    other_mac = "02:00:00:00:00:97"
    drops = node.call("drop_counters")
    na_in, ns_in = _icmp6_in(node.dp, "NeighborAdvertisements"), _icmp6_in(
        node.dp, "NeighborSolicits")
    forged = [
        tn.neighbour_advert(ep1.mac, ep1.host_mac, ll1, host_ll, ep2.ipv6, ep1.mac),  # IP
        tn.neighbour_advert(ep1.mac, ep1.host_mac, ll1, host_ll, ep1.ipv6, other_mac),
        tn.neighbour_solicit(ep1.mac, ep1.host_mac, ll1, host_ll, host_ll, other_mac),
        tn.neighbour_solicit(ep1.mac, "33:33:ff:00:00:01", "::", "ff02::1:ff00:1",
                             ep2.ipv6, None),  # duplicate address detection for another's
    ]
    for frame in forged:
        tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, frame)

    def delta(reason: str) -> int:
        return node.call("drop_counters")[reason] - drops[reason]

    assert poll(lambda: (delta("invalid-source-ip"), delta("invalid-source-mac")) == (2, 2))
    assert _icmp6_in(node.dp, "NeighborAdvertisements") == na_in
    assert _icmp6_in(node.dp, "NeighborSolicits") == ns_in
    ev = find_event(node, reason_name="invalid-source-mac", src=ll1, dst=host_ll)
    assert ev is not None and ev["protocol"] == 58

    # Genuine ones pass: an advertisement of its own address with its own MAC, and
    # the node's resolution of ep1 (it pings ep1 with an empty neighbour cache).
    genuine = tn.neighbour_advert(ep1.mac, ep1.host_mac, ll1, host_ll, ep1.ipv6, ep1.mac)
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, genuine)
    assert poll(lambda: _icmp6_in(node.dp, "NeighborAdvertisements") == na_in + 1)
    tn.ip(node.topo.node, "-6", "neigh", "flush", "dev", ep1.host_ifname)
    assert node.dp.call(tn.ping, ep1.ipv6, 1, 1.0) == 1
    assert (delta("invalid-source-ip"), delta("invalid-source-mac")) == (2, 2)


def test_unknown_l3_is_dropped(node: Node) -> None:
    ep1 = node.ep1
    before = node.drops("unsupported-l3")
    frame = (bytes.fromhex(ep1.host_mac.replace(":", "")) + bytes.fromhex(ep1.mac.replace(":", ""))
             + b"\x88\xb5" + b"\0" * 46)  # IEEE local experimental ethertype
    tn.run_in_netns(ep1.netns, tn.send_raw_frame, ep1.ifname, frame)
    assert poll(lambda: node.drops("unsupported-l3") - before == 1)
