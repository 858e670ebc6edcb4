"""Endpoints through the real agent, in a test-made node namespace (issue 3).

Each test's agent runs in its own node namespace with its own state dir, socket and pin
path; endpoints are namespaces the test made; the "outside" host is another namespace on
the node's uplink with an address from 198.51.100.0/24 and 2001:db8::/64.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import RunningAgent, reset_agent, start_agent, unique
from tests.support import netns as nsh
from tests.support.waiting import eventually

PAYLOAD = os.urandom(256 * 1024)


@pytest.fixture
def agent(module_agent: RunningAgent) -> Iterator[RunningAgent]:
    """The module's shared agent, reset after each test (no endpoint, address or rule
    left); tests that need other flags or restarts start agents of their own."""
    try:
        yield module_agent
    finally:
        reset_agent(module_agent)


@pytest.fixture
def endpoint_namespaces():
    made: list[str] = []

    def make() -> str:
        name = unique("cpyt-ep")
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def put_endpoint(agent: RunningAgent, ep_id: str, ns: str, **extra) -> dict:
    body = {"netns": f"/var/run/netns/{ns}", "interface-name": "eth0",
            "container-id": ep_id, "labels": extra.pop("labels", ["container:app=test"])}
    body.update(extra)
    resp = agent.api("PUT", f"/v1/endpoint/{ep_id}", body)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert doc["state"] == "ready"
    return doc


def node_links(agent: RunningAgent) -> str:
    return nsh.ip(agent.netns, "-br", "link")


def test_two_endpoints_talk_v4_and_v6(agent, endpoint_namespaces) -> None:
    a_ns, b_ns = endpoint_namespaces(), endpoint_namespaces()
    a = put_endpoint(agent, "ep-a", a_ns)
    b = put_endpoint(agent, "ep-b", b_ns)
    assert a["addressing"]["ipv4"] != b["addressing"]["ipv4"]
    assert a["gateway"]["ipv4"] == "10.200.0.1"
    # Inside: /32 and /128, default routes via the gateway, a permanent gateway neighbour.
    assert f"{a['addressing']['ipv4']}/32" in nsh.ip(a_ns, "-br", "addr")
    assert f"{a['addressing']['ipv6']}/128" in nsh.ip(a_ns, "-br", "addr")
    assert "default via 10.200.0.1" in nsh.ip(a_ns, "route")
    assert "PERMANENT" in nsh.ip(a_ns, "neigh", "show", "10.200.0.1")
    with nsh.NetnsWorker(a_ns) as wa, nsh.NetnsWorker(b_ns) as wb:
        for fam in ("ipv4", "ipv6"):
            assert wa.call(nsh.ping, b["addressing"][fam], 3) == 3
            assert wb.call(nsh.ping, a["gateway"][fam], 2) == 2
        for fam, port in (("ipv4", 7001), ("ipv6", 7002)):
            wb.call(nsh.tcp_sink_start, b["addressing"][fam], port)
            wa.call(nsh.tcp_send, b["addressing"][fam], port, PAYLOAD)
            got = wb.call(nsh.tcp_sink_result, port)
            assert got["data"] == PAYLOAD, f"{fam}: payload corrupted or short"


def test_endpoint_reaches_outside_through_masquerade(agent, endpoint_namespaces) -> None:
    outside = endpoint_namespaces()
    nsh.add_veth(agent.netns, "cpyup0", outside, "eth0")
    nsh.ip(agent.netns, "addr", "add", "198.51.100.1/24", "dev", "cpyup0")
    nsh.ip(agent.netns, "-6", "addr", "add", "2001:db8::1/64", "dev", "cpyup0", "nodad")
    nsh.ip(agent.netns, "link", "set", "cpyup0", "up")
    nsh.ip(outside, "addr", "add", "198.51.100.2/24", "dev", "eth0")
    nsh.ip(outside, "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
    nsh.ip(outside, "link", "set", "eth0", "up")
    nsh.ip(outside, "link", "set", "lo", "up")
    # The outside host knows no route to the pools: replies work only if masqueraded.
    ns = endpoint_namespaces()
    ep = put_endpoint(agent, "ep-out", ns)
    with nsh.NetnsWorker(ns) as we, nsh.NetnsWorker(outside) as wo:
        for dst, port, node_addr in (("198.51.100.2", 7100, "198.51.100.1"),
                                     ("2001:db8::2", 7101, "2001:db8::1")):
            wo.call(peer_recorder_start, dst, port)
            we.call(nsh.tcp_send, dst, port, b"hello outside")
            peer, data = wo.call(peer_recorder_result, port)
            assert data == b"hello outside"
            assert peer == node_addr, f"outside saw {peer}, not the node's address"
        assert we.call(nsh.ping, "198.51.100.2", 2) == 2
    assert ep["addressing"]["ipv4"].startswith("10.200.")
    rules = subprocess.run([*_nsenter(agent), "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True).stdout
    assert "MASQUERADE" in rules and "CILIUM_PY_POSTROUTING" in rules


_PEERS: dict[int, object] = {}


def peer_recorder_start(bind: str, port: int) -> None:
    """(runs in a worker) accept one connection; remember who it came from."""
    import socket
    import threading

    fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
    lsock = socket.socket(fam, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((bind, port))
    lsock.listen(1)
    result: dict = {}

    def serve() -> None:
        conn, addr = lsock.accept()
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        conn.sendall(b"ok")
        conn.close()
        lsock.close()
        result["peer"], result["data"] = addr[0], data

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    _PEERS[port] = (thread, result)


def peer_recorder_result(port: int) -> tuple[str, bytes]:
    thread, result = _PEERS.pop(port)
    thread.join(10)
    return result.get("peer", ""), result.get("data", b"")


def _nsenter(agent: RunningAgent) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{agent.netns}", "--"]


def test_forged_source_is_dropped_and_counted(agent, endpoint_namespaces) -> None:
    a_ns, b_ns = endpoint_namespaces(), endpoint_namespaces()
    a = put_endpoint(agent, "ep-forge-a", a_ns)
    b = put_endpoint(agent, "ep-forge-b", b_ns)
    before = agent.api("GET", "/v1/bpf/drops").json()
    # A second address inside the container that the agent never gave it.
    nsh.ip(a_ns, "addr", "add", "10.200.99.99/32", "dev", "eth0")
    with nsh.NetnsWorker(a_ns) as wa:
        assert wa.call(nsh.ping, b["addressing"]["ipv4"], 2, 1.0, "10.200.99.99") == 0
        assert wa.call(nsh.ping, b["addressing"]["ipv4"], 1) == 1  # the real source works
    after = agent.api("GET", "/v1/bpf/drops").json()
    assert sum(after.values()) >= sum(before.values()) + 2, (before, after)
    assert a["identity"] >= 256


def test_delete_leaves_nothing_and_is_idempotent(agent, endpoint_namespaces) -> None:
    ns = endpoint_namespaces()
    ep = put_endpoint(agent, "ep-del", ns)
    again = agent.api("PUT", "/v1/endpoint/ep-del", {
        "netns": f"/var/run/netns/{ns}", "interface-name": "eth0", "container-id": "ep-del",
        "labels": ["container:app=test"]})
    assert again.status_code == 200 and again.json()["addressing"] == ep["addressing"]
    assert ep["host-interface"] in node_links(agent)
    assert len(agent.api("GET", "/v1/bpf/endpoint").json()) >= 1
    assert agent.api("DELETE", "/v1/endpoint/ep-del").status_code == 204
    assert agent.api("DELETE", "/v1/endpoint/ep-del").status_code == 404
    assert agent.api("GET", "/v1/endpoint/ep-del").status_code == 404
    # Unreachable at once: no datapath entry is left for it.
    assert agent.api("GET", "/v1/bpf/endpoint").json() == []
    # The veth, its routes and then its addresses go in the agent's background reaper.
    eventually(lambda: ep["host-interface"] not in node_links(agent), what="veth gone")
    assert "eth0" not in nsh.ip(ns, "-br", "link")
    routes = nsh.ip(agent.netns, "route") + nsh.ip(agent.netns, "-6", "route")
    assert ep["addressing"]["ipv4"] not in routes and ep["addressing"]["ipv6"] not in routes
    eventually(lambda: agent.api("GET", "/v1/ipam").json()["allocations"] == {},
               what="addresses released")


def test_delete_then_attach_again_at_once(agent, endpoint_namespaces) -> None:
    """A runtime that deletes and re-adds a container's interface straight away (the
    same netns, interface name and endpoint id) must not trip over the old veth that
    the agent is still removing in the background."""
    ns = endpoint_namespaces()
    first = put_endpoint(agent, "ep-again", ns)
    for _ in range(5):
        assert agent.api("DELETE", "/v1/endpoint/ep-again").status_code == 204
        again = put_endpoint(agent, "ep-again", ns)
        assert again["host-interface"] == first["host-interface"]
        assert again["state"] == "ready"
    links = nsh.ip(ns, "-br", "link")
    assert links.count("eth0") == 1, links
    with nsh.NetnsWorker(ns) as w:
        assert w.call(nsh.ping, again["gateway"]["ipv4"], 1) == 1
    assert agent.api("DELETE", "/v1/endpoint/ep-again").status_code == 204
    eventually(lambda: agent.api("GET", "/v1/ipam").json()["allocations"] == {},
               what="addresses released")


def test_requested_address_honoured_or_409(agent, endpoint_namespaces) -> None:
    ns1, ns2 = endpoint_namespaces(), endpoint_namespaces()
    ep = put_endpoint(agent, "ep-req1", ns1, addressing={"ipv4": "10.200.3.3"})
    assert ep["addressing"]["ipv4"] == "10.200.3.3"
    resp = agent.api("PUT", "/v1/endpoint/ep-req2", {
        "netns": f"/var/run/netns/{ns2}", "addressing": {"ipv4": "10.200.3.3"}})
    assert resp.status_code == 409
    assert "eth0" not in nsh.ip(ns2, "-br", "link")


def test_bad_input_names_the_problem_and_leaves_nothing(agent, endpoint_namespaces) -> None:
    ns = endpoint_namespaces()
    links_before = node_links(agent)
    cases = [
        ({"netns": "/var/run/netns/cpyt-does-not-exist"}, 400, "netns"),
        ({"netns": f"/var/run/netns/{ns}", "interface-name": "x" * 20}, 400, "interface"),
        ({"netns": f"/var/run/netns/{ns}", "labels": ["bad label with spaces=="]}, 400, "label"),
        ({"netns": f"/var/run/netns/{ns}", "addressing": {"ipv4": "192.168.77.1"}}, 400, "pool"),
        ({"interface-name": "eth0"}, 400, "netns"),
    ]
    for body, status, word in cases:
        resp = agent.api("PUT", "/v1/endpoint/ep-bad", body)
        assert resp.status_code == status, (body, resp.text)
        assert word in resp.text.lower(), (body, resp.text)
    nsh.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    resp = agent.api("PUT", "/v1/endpoint/ep-bad", {"netns": f"/var/run/netns/{ns}"})
    assert resp.status_code == 409 and "eth0" in resp.text
    assert agent.api("PUT", "/v1/endpoint/" + "x" * 129, {"netns": "/x"}).status_code == 400
    assert node_links(agent) == links_before
    assert agent.api("GET", "/v1/ipam").json()["allocations"] == {}
    assert agent.api("GET", "/v1/endpoint").json() == []


def test_pool_exhausted_is_4xx(node_netns, workdir, bpf_root, endpoint_namespaces) -> None:
    agent = start_agent(node_netns, workdir, bpf_root, "--ipv4-pool", "10.202.0.0/30",
                        "--ipv6-pool", "none")
    try:
        ns1, ns2 = endpoint_namespaces(), endpoint_namespaces()
        put_endpoint(agent, "ep-x1", ns1)
        resp = agent.api("PUT", "/v1/endpoint/ep-x2", {"netns": f"/var/run/netns/{ns2}"})
        assert 400 <= resp.status_code < 500 and "exhausted" in resp.text
        assert "eth0" not in nsh.ip(ns2, "-br", "link")
    finally:
        agent.stop()


def test_fifty_concurrent_creates_and_deletes(agent, endpoint_namespaces) -> None:
    names = [endpoint_namespaces() for _ in range(50)]

    def create(i: int) -> dict:
        resp = agent.api("PUT", f"/v1/endpoint/ep-c{i}", {"netns": f"/var/run/netns/{names[i]}"})
        assert resp.status_code == 201, resp.text
        return resp.json()

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        eps = list(pool.map(create, range(50)))
    v4 = {e["addressing"]["ipv4"] for e in eps}
    v6 = {e["addressing"]["ipv6"] for e in eps}
    assert len(v4) == 50 and len(v6) == 50
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(
            lambda i: agent.api("DELETE", f"/v1/endpoint/ep-c{i}").status_code, range(50)))
    assert codes == [204] * 50
    eventually(lambda: agent.api("GET", "/v1/ipam").json()["allocations"] == {},
               what="addresses released")
    assert agent.api("GET", "/v1/ipam").json()["pools"]["ipv4"]["used"] == 0
    assert "lxc" not in node_links(agent)


def test_ipv4_only_and_ipv6_only_nodes(node_netns, workdir, bpf_root, endpoint_namespaces) -> None:
    for flags, fam, other in ((("--ipv6-pool", "none"), "ipv4", "ipv6"),
                              (("--ipv4-pool", "none"), "ipv6", "ipv4")):
        agent = start_agent(node_netns, workdir, bpf_root, *flags,
                            state_dir=os.path.join(workdir, f"state-{fam}"))
        try:
            a_ns, b_ns = endpoint_namespaces(), endpoint_namespaces()
            a = put_endpoint(agent, f"ep-{fam}-a", a_ns)
            b = put_endpoint(agent, f"ep-{fam}-b", b_ns)
            assert a["addressing"][other] is None
            with nsh.NetnsWorker(a_ns) as wa:
                assert wa.call(nsh.ping, b["addressing"][fam], 2) == 2
            for ep in ("a", "b"):
                agent.api("DELETE", f"/v1/endpoint/ep-{fam}-{ep}")
        finally:
            agent.stop()


def test_kill_9_keeps_stream_and_restart_restores(node_netns, workdir, bpf_root,
                                                 endpoint_namespaces) -> None:
    agent = start_agent(node_netns, workdir, bpf_root)
    a_ns, b_ns, gone_ns = endpoint_namespaces(), endpoint_namespaces(), endpoint_namespaces()
    try:
        put_endpoint(agent, "ep-ka", a_ns)
        b = put_endpoint(agent, "ep-kb", b_ns)
        put_endpoint(agent, "ep-gone", gone_ns)
        listed = {e["id"] for e in agent.api("GET", "/v1/endpoint").json()}
        with nsh.NetnsWorker(a_ns) as wa, nsh.NetnsWorker(b_ns) as wb:
            wb.call(nsh.tcp_sink_start, b["addressing"]["ipv4"], 7200)
            wa.call(nsh.tcp_stream_start, b["addressing"]["ipv4"], 7200, b"x" * 1024, 0.01)
            time.sleep(0.5)
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            # The namespace of one endpoint dies while the agent is down.
            subprocess.run(["ip", "netns", "del", gone_ns], check=True)
            time.sleep(1.0)
            restarted = start_agent(node_netns, workdir, bpf_root)
            try:
                time.sleep(0.5)
                sent = wa.call(nsh.tcp_stream_stop, 7200)
                got = wb.call(nsh.tcp_sink_result, 7200)
                assert sent["error"] is None, sent
                assert got["error"] is None and got["bytes"] == sent["sent"], (sent, got)
                after = {e["id"] for e in restarted.api("GET", "/v1/endpoint").json()}
                assert after == listed - {"ep-gone"}
                assert wa.call(nsh.ping, b["addressing"]["ipv6"], 2) == 2
                assert "ep-gone" not in restarted.api("GET", "/v1/ipam").json()[
                    "allocations"].values()
            finally:
                restarted.stop()
    finally:
        agent.stop()


def test_interface_reads_the_container_side_now(agent, endpoint_namespaces) -> None:
    """What CNI CHECK compares: the agent reads the interface in the container's
    namespace when asked, so drift made behind its back shows."""
    ns = endpoint_namespaces()
    ep = put_endpoint(agent, "ep-if", ns)
    seen = agent.api("GET", "/v1/endpoint/ep-if/interface").json()
    assert seen["exists"] and seen["netns"] == f"/var/run/netns/{ns}" and seen["up"]
    assert seen["mac"] == ep["mac"]
    assert {a["address"] for a in seen["addresses"]} == {ep["addressing"]["ipv4"],
                                                         ep["addressing"]["ipv6"]}
    assert {(r["dst"], r["gateway"]) for r in seen["routes"]} >= {
        ("0.0.0.0/0", ep["gateway"]["ipv4"]), ("::/0", ep["gateway"]["ipv6"])}
    nsh.ip(ns, "route", "del", "default")
    seen = agent.api("GET", "/v1/endpoint/ep-if/interface").json()
    assert ("0.0.0.0/0", ep["gateway"]["ipv4"]) not in {
        (r["dst"], r["gateway"]) for r in seen["routes"]}
    nsh.ip(ns, "link", "del", "eth0")
    seen = agent.api("GET", "/v1/endpoint/ep-if/interface").json()
    assert seen["exists"] is False and "eth0" in seen["reason"]
    assert agent.api("GET", "/v1/endpoint/nope/interface").status_code == 404
