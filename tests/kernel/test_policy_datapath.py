"""Policy enforcement in the BPF datapath, with real traffic in test-made namespaces.

Datapath level: no agent. One node namespace with three endpoints (identities 1001,
1002, 1003) and an "outside" namespace behind the node's uplink (198.51.100.2,
2001:db8:1::2, plus 203.0.113.2 / 2001:db8:2::2 on another prefix), built once for
the module; a worker in the node runs the Datapath. Each test hands ``set_policy``
a ``ResolvedPolicy`` made of explicit entries (the policy engine has its own unit
tests), checks what passes and what does not, and resets every endpoint to "not
enforced" at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.labels import LabelSet
from cilium_py.policy import (
    Action,
    Direction,
    DirectionPolicy,
    PolicyKey,
    Protocol,
    ResolvedPolicy,
    Verdict,
)
from tests.support import netns as tn
from tests.support.waiting import poll

pytestmark = pytest.mark.kernel

HOST, WORLD, CIDR = 1, 2, 300
OUT4, OUT6 = "198.51.100.2", "2001:db8:1::2"  # in the CIDR identity's prefixes
FAR4, FAR6 = "203.0.113.2", "2001:db8:2::2"  # outside everything: world
CIDRS = {"198.51.100.0/24": CIDR, "2001:db8:1::/64": CIDR}

# How long a check waits before calling a packet dropped: allowed traffic between
# namespaces on one machine answers in well under a millisecond.
DENY = 0.2

Rule = tuple[int, int, Protocol]  # identity, port, protocol (0 = any)


def resolved(ingress: list[Rule] | None = None, egress: list[Rule] | None = None,
             redirect: tuple[Rule, ...] = ()) -> ResolvedPolicy:
    """A resolved policy with exactly these entries; None = direction not enforced."""
    def direction(d: Direction, rules: list[Rule] | None) -> DirectionPolicy:
        entries = {
            PolicyKey(i, p, Protocol(pr), d):
                Verdict(Action.REDIRECT if (i, p, pr) in redirect else Action.ALLOW)
            for i, p, pr in rules or ()
        }
        return DirectionPolicy(d, rules is not None, entries)

    return ResolvedPolicy(LabelSet(), direction(Direction.INGRESS, ingress),
                          direction(Direction.EGRESS, egress))


OPEN = resolved()
TCP, UDP, ANY = Protocol.TCP, Protocol.UDP, Protocol.ANY


@dataclass
class Node:
    topo: tn.NodeTopology
    dp: tn.NetnsWorker
    outside: tn.NetnsWorker
    clients: dict[str, tn.NetnsWorker]

    def call(self, method: str, *args: Any) -> Any:
        return self.dp.call(tn.datapath_call, method, *args)

    def ep(self, n: int) -> tn.EndpointNs:
        return self.topo.endpoints[n - 1]

    def worker(self, n: int) -> tn.NetnsWorker:
        return self.clients[self.ep(n).netns]

    def set_policy(self, n: int, policy: ResolvedPolicy) -> dict[str, Any]:
        return self.call("set_policy", self.ep(n).datapath_info(), policy)

    def tcp(self, src: int, dst: int, port: int, family: str = "ipv4") -> bool:
        return self.worker(src).call(tn.tcp_ok, getattr(self.ep(dst), family), port)

    def udp(self, src: int, dst: int, family: str = "ipv4") -> bool:
        return self.worker(src).call(tn.udp_ok, getattr(self.ep(dst), family), 53)

    def ping(self, src: int, dst: int, family: str = "ipv4") -> bool:
        return self.worker(src).call(tn.ping, getattr(self.ep(dst), family), 1, 0.4) == 1

    def tcp_blocked(self, src: int, dst: int, port: int, family: str = "ipv4") -> bool:
        return not self.worker(src).call(tn.tcp_ok, getattr(self.ep(dst), family), port, DENY)

    def udp_blocked(self, src: int, dst: int, family: str = "ipv4") -> bool:
        return not self.worker(src).call(tn.udp_ok, getattr(self.ep(dst), family), 53, DENY)

    def ping_blocked(self, src: int, dst: int, family: str = "ipv4") -> bool:
        return self.worker(src).call(tn.ping, getattr(self.ep(dst), family), 1, DENY) == 0

    def drops(self) -> int:
        return self.call("drop_counters")["policy-denied"]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = tn.build_node(3)
    bpf_root = os.path.join(tn.BPFFS, tn.unique_name())
    workers: list[tn.NetnsWorker] = []
    dp = None
    try:
        outside_ns = tn.create_netns(tn.unique_name())
        topo.namespaces.append(outside_ns)
        tn.add_outside(topo.node, outside_ns, extra=(FAR4, FAR6))
        dp = tn.NetnsWorker(topo.node)
        dp.call(tn.datapath_start, bpf_root, topo.endpoints, ct_size=4096, endpoint_size=64,
                ipcache_size=256, policy_size=1024, timeout=120)
        clients = {}
        for ns in [ep.netns for ep in topo.endpoints] + [outside_ns]:
            worker = tn.NetnsWorker(ns)
            workers.append(worker)
            worker.call(tn.serve_start, (80, 8080), (53, 5353))
            clients[ns] = worker
        dp.call(tn.datapath_call, "set_ipcache", ipcache_for(topo))
        yield Node(topo, dp, clients[outside_ns], clients)
    finally:
        for worker in workers:
            worker.close()
        if dp is not None:
            try:
                dp.call(tn.datapath_call, "purge")
            finally:
                dp.close()
        topo.cleanup()
        tn.remove_pins(bpf_root)


def ipcache_for(topo: tn.NodeTopology, cidrs: dict[str, int] | None = None) -> dict[str, int]:
    """What the agent would write: endpoints, the router addresses as host, CIDRs."""
    out = dict(CIDRS if cidrs is None else cidrs)
    for ep in topo.endpoints:
        out[f"{ep.ipv4}/32"] = ep.identity
        out[f"{ep.ipv6}/128"] = ep.identity
    out[f"{topo.gw4}/32"] = HOST
    out[f"{topo.gw6}/128"] = HOST
    return out


@pytest.fixture
def lab(node: Node) -> Iterator[Node]:
    """The node with every endpoint open again afterwards (and conntrack flushed, so
    one test's connections never carry over into the next)."""
    node.dp.call(tn.drop_events_clear)
    try:
        yield node
    finally:
        for n in (1, 2, 3):
            node.set_policy(n, OPEN)
        node.call("set_ipcache", ipcache_for(node.topo))
        node.call("flush_ct")


def find_event(node: Node, **match: Any) -> dict[str, Any] | None:
    return tn.find_drop_event(node.dp, **match)


FAMILIES = pytest.mark.parametrize("family", ["ipv4", "ipv6"])


@FAMILIES
def test_l3_allows_one_identity_on_every_port(lab: Node, family: str) -> None:
    lab.set_policy(2, resolved(ingress=[(1001, 0, ANY)]))
    assert lab.tcp(1, 2, 80, family) and lab.tcp(1, 2, 8080, family)
    assert lab.udp(1, 2, family)
    assert lab.ping(1, 2, family)  # an L3 rule covers ICMP too
    assert lab.tcp_blocked(3, 2, 80, family)
    assert lab.ping_blocked(3, 2, family)
    assert lab.tcp(2, 1, 80, family)  # egress of the policed endpoint is not enforced


@FAMILIES
def test_l3_plus_l4(lab: Node, family: str) -> None:
    lab.set_policy(2, resolved(ingress=[(1001, 80, TCP)]))
    assert lab.tcp(1, 2, 80, family)
    assert lab.tcp_blocked(1, 2, 8080, family)
    assert lab.udp_blocked(1, 2, family)
    assert lab.tcp_blocked(3, 2, 80, family)
    # Only L4 rules apply: a ping matches no entry...
    assert lab.ping_blocked(1, 2, family)
    # ...but the reply to ep2's own ping is part of a connection ep2 opened.
    assert lab.ping(2, 1, family)


@FAMILIES
def test_l4_only_tcp_and_udp(lab: Node, family: str) -> None:
    lab.set_policy(2, resolved(ingress=[(0, 80, TCP), (0, 53, UDP)]))
    for src in (1, 3):
        assert lab.tcp(src, 2, 80, family)
        assert lab.udp(src, 2, family)
        assert lab.tcp_blocked(src, 2, 8080, family)
    assert lab.ping_blocked(1, 2, family)
    # The node itself (host) is subject to the same entries.
    assert lab.dp.call(tn.tcp_ok, getattr(lab.ep(2), family), 80)
    assert not lab.dp.call(tn.tcp_ok, getattr(lab.ep(2), family), 8080, DENY)


def test_port_any_protocol_covers_tcp_and_udp(lab: Node) -> None:
    lab.set_policy(2, resolved(ingress=[(1001, 53, ANY), (1001, 80, ANY)]))
    assert lab.udp(1, 2) and lab.tcp(1, 2, 80)
    assert lab.tcp_blocked(1, 2, 8080)


@FAMILIES
def test_replies_of_allowed_connections_pass_egress_deny(lab: Node, family: str) -> None:
    # ep2: ingress from ep1 on 80 and UDP 53 only, and no egress at all.
    lab.set_policy(2, resolved(ingress=[(1001, 80, TCP), (1001, 53, UDP)], egress=[]))
    assert lab.tcp(1, 2, 80, family)  # ep2's SYN-ACK and data are replies
    assert lab.udp(1, 2, family)  # so is the echo
    assert lab.tcp_blocked(2, 1, 80, family)  # a connection ep2 opens is not
    assert lab.ping_blocked(2, 1, family)
    assert lab.tcp_blocked(2, 1, 80, family)  # the denied SYN left no state behind


@FAMILIES
def test_icmp_errors_of_allowed_connections_pass(lab: Node, family: str) -> None:
    # ep1 accepts nothing but TCP 80, yet the port unreachable for its own UDP
    # datagram (from a local endpoint, and from the outside) is related and passes.
    lab.set_policy(1, resolved(ingress=[(0, 80, TCP)]))
    assert lab.worker(1).call(tn.udp_refused, getattr(lab.ep(2), family), 9999)
    far = OUT4 if family == "ipv4" else OUT6
    assert lab.worker(1).call(tn.udp_refused, far, 9999)
    assert lab.ping_blocked(2, 1, family)


def _reassembled(family: str) -> int:
    """Datagrams this namespace put back together from fragments."""
    if family == "ipv4":
        return tn.read_snmp("Ip")["ReasmOKs"]
    return tn.read_snmp6()["Ip6ReasmOKs"]


@FAMILIES
def test_fragmented_udp_gets_its_flows_verdict(lab: Node, family: str) -> None:
    """4,000-byte datagrams at MTU 1,500 travel as three fragments each way; only the
    first carries the ports, yet every fragment gets the flow's verdict."""
    lab.set_policy(2, resolved(ingress=[(0, 53, UDP)]))
    dst = getattr(lab.ep(2), family)
    far = OUT4 if family == "ipv4" else OUT6
    reasm = lab.worker(2).call(_reassembled, family)
    assert lab.worker(1).call(tn.udp_echo_ok, dst, 53, 4000)  # direct delivery
    assert lab.outside.call(tn.udp_echo_ok, dst, 53, 4000, src=far)  # via the host stack
    assert lab.worker(2).call(_reassembled, family) - reasm == 2
    assert lab.worker(1).call(tn.udp_echo_ok, dst, 53, 100)  # unfragmented still passes

    before = lab.drops()
    assert not lab.worker(1).call(tn.udp_echo_ok, dst, 5353, 4000, DENY)
    assert not lab.outside.call(tn.udp_echo_ok, dst, 5353, 4000, DENY, far)
    # All fragments are policy drops: the later ones had their first fragment's ports.
    assert lab.drops() - before == 6
    assert lab.call("drop_counters")["fragment-not-found"] == 0
    assert lab.worker(2).call(_reassembled, family) - reasm == 2
    ev = find_event(lab, reason_name="policy-denied", dst=dst, dport=5353)
    assert ev is not None and ev["protocol"] == 17


@FAMILIES
def test_icmp_errors_only_from_the_flows_peer(lab: Node, family: str) -> None:
    """ep3 has a UDP flow with ep2. An error about it from ep2 (its peer) reaches ep3;
    the same error forged by ep1 does not, with no policy anywhere to stop it."""
    ep1, ep2, ep3 = (getattr(lab.ep(n), family) for n in (1, 2, 3))
    before = lab.call("drop_counters").get("icmp-error-unrelated", 0)

    sport = lab.worker(3).call(tn.udp_flow_start, ep2, 53)
    lab.worker(1).call(tn.send_icmp_port_unreachable, ep3, ep3, ep2, sport, 53)
    assert lab.worker(3).call(tn.udp_flow_check, ep2, 53) == "ok"
    assert poll(lambda: lab.call("drop_counters")["icmp-error-unrelated"] - before == 1)
    ev = find_event(lab, reason_name="icmp-error-unrelated", src=ep1, dst=ep3)
    assert ev is not None and ev["direction"] == "from-container"

    # From ep1 to ep3 about a flow ep1 is not in, also with ep1 as the inner destination.
    sport = lab.worker(3).call(tn.udp_flow_start, ep2, 53)
    lab.worker(1).call(tn.send_icmp_port_unreachable, ep3, ep3, ep1, sport, 53)
    assert lab.worker(3).call(tn.udp_flow_check, ep2, 53) == "ok"
    assert poll(lambda: lab.call("drop_counters")["icmp-error-unrelated"] - before == 2)

    # The peer's own error is related and kills the flow, as it should.
    sport = lab.worker(3).call(tn.udp_flow_start, ep2, 53)
    lab.worker(2).call(tn.send_icmp_port_unreachable, ep3, ep3, ep2, sport, 53)
    assert lab.worker(3).call(tn.udp_flow_check, ep2, 53) == "refused"
    # And an error from the outside about it (any router may send one) too.
    sport = lab.worker(3).call(tn.udp_flow_start, ep2, 53)
    lab.outside.call(tn.send_icmp_port_unreachable, ep3, ep3, ep2, sport, 53)
    assert lab.worker(3).call(tn.udp_flow_check, ep2, 53) == "refused"
    # An error about nothing at all, from the outside: dropped.
    lab.outside.call(tn.send_icmp_port_unreachable, ep3, ep3, ep2, 1, 53)
    assert poll(lambda: lab.call("drop_counters")["icmp-error-unrelated"] - before == 3)


def _neighbour_solicits() -> int:
    return tn.read_snmp6()["Icmp6InNeighborSolicits"]


def test_neighbour_discovery_is_no_way_past_policy(lab: Node) -> None:
    """ND to another endpoint's address (not for the node) is ordinary ICMPv6: an
    L4-only ingress policy drops it, from a local endpoint and from the outside."""
    ep2 = lab.ep(2).ipv6
    # The node resolves ep2 now, so that its own (legitimate) solicitations are done.
    assert lab.dp.call(tn.ping, ep2, 1, 1.0) == 1
    lab.set_policy(2, resolved(ingress=[(0, 80, TCP)]))
    ns = b"\0" * 4 + socket.inet_pton(socket.AF_INET6, ep2)
    seen = lab.worker(2).call(_neighbour_solicits)
    before = lab.drops()
    lab.worker(1).call(tn.send_icmpv6, ep2, 135, ns)
    lab.outside.call(tn.send_icmpv6, ep2, 135, ns)
    assert poll(lambda: lab.drops() - before == 2)
    assert lab.worker(2).call(_neighbour_solicits) == seen
    ev = find_event(lab, reason_name="policy-denied", src=lab.ep(1).ipv6, dst=ep2)
    assert ev is not None and ev["protocol"] == 58
    assert lab.tcp(1, 2, 80, "ipv6")


def test_icmpv6_error_quoting_extension_headers_is_related(lab: Node) -> None:
    """The port unreachable for a datagram with a destination options header quotes
    that header too: the inner tuple is found past it, so the error is related."""
    lab.set_policy(1, resolved(ingress=[(0, 80, TCP)]))
    assert lab.worker(1).call(tn.udp_refused, lab.ep(2).ipv6, 9999, dstopts=True)
    assert lab.worker(1).call(tn.udp_refused, OUT6, 9999, dstopts=True)
    assert lab.ping_blocked(2, 1, "ipv6")


def test_enforcement_off_allows_everything_and_removes_entries(lab: Node) -> None:
    lab.set_policy(2, resolved(ingress=[(1001, 80, TCP)], egress=[(1001, 80, TCP)]))
    assert len(lab.call("policy_entries", lab.ep(2).datapath_info())) == 2
    assert lab.tcp_blocked(3, 2, 80)
    result = lab.set_policy(2, OPEN)
    assert (result["removed"], result["flags_changed"]) == (2, True)
    assert lab.call("policy_entries", lab.ep(2).datapath_info()) == []
    assert lab.call("endpoint_configs")[lab.ep(2).host_ifindex]["policy"] == {
        "ingress_enforced": False, "egress_enforced": False}
    assert lab.tcp(3, 2, 80) and lab.tcp(2, 3, 8080) and lab.ping(3, 2) and lab.udp(2, 1)


@FAMILIES
def test_cidr_identities_from_the_ipcache(lab: Node, family: str) -> None:
    out, far = (OUT4, FAR4) if family == "ipv4" else (OUT6, FAR6)
    # Egress: the CIDR identity is allowed, the rest of the world is not.
    lab.set_policy(1, resolved(egress=[(CIDR, 0, ANY)]))
    assert lab.worker(1).call(tn.tcp_ok, out, 80)
    assert not lab.worker(1).call(tn.tcp_ok, far, 80, DENY)
    assert lab.tcp_blocked(1, 2, 80, family)  # another endpoint is not in that CIDR
    # Ingress: from the CIDR identity only; the far address is world.
    lab.set_policy(1, resolved(ingress=[(CIDR, 80, TCP)]))
    ep1 = getattr(lab.ep(1), family)
    assert lab.outside.call(tn.tcp_ok, ep1, 80, src=out)
    assert not lab.outside.call(tn.tcp_ok, ep1, 80, DENY, far)
    lab.set_policy(1, resolved(ingress=[(WORLD, 80, TCP)]))
    assert lab.outside.call(tn.tcp_ok, ep1, 80, src=far)
    assert not lab.outside.call(tn.tcp_ok, ep1, 80, DENY, out)
    # Without the CIDR in the ipcache the same source is plain world.
    result = lab.call("set_ipcache", ipcache_for(lab.topo, cidrs={}))
    assert result == {"added": 0, "changed": 0, "removed": 2}
    assert lab.outside.call(tn.tcp_ok, ep1, 80, src=out)


def test_host_is_identity_one(lab: Node) -> None:
    lab.set_policy(1, resolved(ingress=[(HOST, 0, ANY)], egress=[(HOST, 0, ANY)]))
    assert lab.dp.call(tn.ping, lab.ep(1).ipv4, 1, 0.4) == 1  # node-originated
    assert lab.dp.call(tn.ping, lab.ep(1).ipv6, 1, 0.4) == 1
    assert lab.tcp_blocked(1, 2, 80)
    assert lab.tcp_blocked(2, 1, 80)
    assert lab.worker(1).call(tn.ping, lab.topo.gw4, 1, 0.4) == 1  # router address: host
    assert lab.worker(1).call(tn.ping, lab.topo.gw6, 1, 0.4) == 1


def test_denied_packets_are_counted_and_reported(lab: Node) -> None:
    ep1, ep2, ep3 = lab.ep(1), lab.ep(2), lab.ep(3)
    lab.set_policy(2, resolved(ingress=[(1001, 80, TCP)], egress=[(1001, 0, ANY)]))
    before = lab.drops()

    assert lab.tcp_blocked(3, 2, 8080)  # ingress, direct delivery from ep3
    ev = find_event(lab, reason_name="policy-denied", src=ep3.ipv4, dst=ep2.ipv4,
                    dport=8080)
    assert ev is not None, lab.dp.call(tn.drop_events)
    assert (ev["src_identity"], ev["dst_identity"]) == (ep3.identity, ep2.identity)
    assert (ev["protocol"], ev["dport"], ev["family"]) == (6, 8080, "ipv4")
    assert ev["sport"] > 0
    # The verdict is ep2's (ingress), even though ep3's program made it.
    assert (ev["endpoint_id"], ev["ifindex"], ev["direction"]) == (
        ep2.endpoint_id, ep2.host_ifindex, "to-container")

    assert not lab.worker(2).call(tn.udp_ok, ep3.ipv6, 53, DENY)  # egress
    ev = find_event(lab, reason_name="policy-denied", src=ep2.ipv6, dst=ep3.ipv6, dport=53)
    assert ev is not None
    assert (ev["src_identity"], ev["dst_identity"]) == (ep2.identity, ep3.identity)
    assert (ev["protocol"], ev["dport"], ev["direction"]) == (17, 53, "from-container")
    assert ev["endpoint_id"] == ep2.endpoint_id

    assert not lab.outside.call(tn.tcp_ok, ep2.ipv4, 80, DENY, FAR4)  # from the host stack
    ev = find_event(lab, reason_name="policy-denied", src=FAR4, dst=ep2.ipv4, dport=80)
    assert ev is not None
    assert (ev["src_identity"], ev["dst_identity"]) == (WORLD, ep2.identity)
    assert (ev["dport"], ev["direction"], ev["ifindex"]) == (80, "to-container", ep2.host_ifindex)

    assert lab.drops() - before >= 3
    assert lab.tcp(1, 2, 80)  # allowed traffic is not counted
    assert not [e for e in lab.dp.call(tn.drop_events) if e["src"] == ep1.ipv4]


def test_set_policy_writes_only_the_difference(lab: Node) -> None:
    info = lab.ep(3).datapath_info()
    base = [(1001, 80, TCP), (1002, 0, ANY), (0, 53, UDP)]
    assert lab.set_policy(3, resolved(ingress=base)) == {
        "added": 3, "changed": 0, "removed": 0, "flags_changed": True}
    writes = lab.call("policy_writes")

    # The same policy again: not one map operation.
    assert lab.set_policy(3, resolved(ingress=base)) == {
        "added": 0, "changed": 0, "removed": 0, "flags_changed": False}
    assert lab.call("policy_writes") == writes

    # One port changes: one entry added, one removed; a verdict changes in place.
    changed = [(1001, 8080, TCP), (1002, 0, ANY), (0, 53, UDP)]
    assert lab.set_policy(3, resolved(ingress=changed, redirect=((0, 53, UDP),))) == {
        "added": 1, "changed": 1, "removed": 1, "flags_changed": False}
    after = lab.call("policy_writes")
    assert after["policy_updates"] - writes["policy_updates"] == 2
    assert after["policy_deletes"] - writes["policy_deletes"] == 1

    rows = lab.call("policy_entries", info)
    assert rows == [
        {"direction": "ingress", "identity": 0, "port": 53, "protocol": "UDP",
         "action": "redirect", "proxy_port": 0},
        {"direction": "ingress", "identity": 1001, "port": 8080, "protocol": "TCP",
         "action": "allow", "proxy_port": 0},
        {"direction": "ingress", "identity": 1002, "port": 0, "protocol": "ANY",
         "action": "allow", "proxy_port": 0},
    ]
    # The new port is in force.
    # A redirect without a proxy port (and of UDP) cannot be enforced: it drops.
    assert not lab.udp(1, 3) and lab.tcp(1, 3, 8080) and lab.tcp_blocked(1, 3, 80)
    assert lab.tcp(2, 3, 80)
    # Other endpoints' entries are untouched.
    assert lab.call("policy_entries", lab.ep(1).datapath_info()) == []


def test_ipcache_writes_only_the_difference(lab: Node) -> None:
    want = ipcache_for(lab.topo)
    assert lab.call("set_ipcache", want) == {"added": 0, "changed": 0, "removed": 0}
    want["10.200.9.9"] = 4000  # a bare address is a /32
    want["198.51.100.0/24"] = 301
    assert lab.call("set_ipcache", want) == {"added": 1, "changed": 1, "removed": 0}
    rows = {r["prefix"]: r["identity"] for r in lab.call("ipcache_entries")}
    assert rows["10.200.9.9/32"] == 4000
    assert rows["198.51.100.0/24"] == 301
    assert rows[f"{lab.ep(1).ipv6}/128"] == lab.ep(1).identity


def test_policy_before_attach_and_detach_removes_entries(lab: Node) -> None:
    topo = lab.topo
    ns4 = tn.create_netns(tn.unique_name())
    topo.namespaces.append(ns4)
    ep4 = tn.add_endpoint(topo.node, ns4, "lxc4", ipv4="10.200.4.1", ipv6="fd10:200:4::1",
                          gw4=topo.gw4, gw6=topo.gw6, endpoint_id=104, identity=1004)
    info = ep4.datapath_info()
    try:
        with tn.NetnsWorker(ns4) as server:
            server.call(tn.serve_start, (80,), ())
            # Policy first, attach second: enforced from the first packet.
            lab.call("set_policy", info, resolved(ingress=[(1001, 80, TCP)]))
            lab.call("attach_endpoint", info)
            assert lab.call("endpoint_configs")[ep4.host_ifindex]["policy"][
                "ingress_enforced"]
            assert lab.worker(1).call(tn.tcp_ok, ep4.ipv4, 80)
            assert not lab.worker(2).call(tn.tcp_ok, ep4.ipv4, 80, DENY)
            # A re-attach (agent restart) keeps the flags.
            lab.call("attach_endpoint", info)
            assert not lab.worker(2).call(tn.tcp_ok, ep4.ipv6, 80, DENY)

            assert lab.call("policy_map_endpoints")[ep4.endpoint_id] == 1
            lab.call("detach_endpoint", info)
            assert lab.call("policy_entries", info) == []
            assert ep4.endpoint_id not in lab.call("policy_map_endpoints")
    finally:
        lab.call("detach_endpoint", info)
        tn.delete_netns(ns4)
        topo.namespaces.remove(ns4)
