"""Fail closed (issue 10): an endpoint whose policy is not in its maps passes nothing.

Each test runs a real agent in its own node namespace with a deliberately small policy
map (``--policy-map-size``), so that writing an endpoint's policy fails the way a full
map fails in production: the kernel refuses the update. Endpoints are test-made
namespaces; traffic stays between them.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import RunningAgent, start_agent, unique
from tests.support import netns as nsh
from tests.support.waiting import eventually

pytestmark = pytest.mark.kernel

PORTS = (80, 8080)
MANY_PORTS = [str(p) for p in range(9000, 9020)]  # 20 ports: more entries than the map


@pytest.fixture
def namespaces():
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


def attach(agent: RunningAgent, ep_id: str, ns: str, app: str):
    return agent.api("PUT", f"/v1/endpoint/{ep_id}", {
        "netns": f"/var/run/netns/{ns}", "interface-name": "eth0",
        "labels": [f"container:app={app}"]})


def rule_for_b(ports: list[str]) -> list[dict]:
    return [{"endpointSelector": {"matchLabels": {"app": "b"}},
             "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "a"}}],
                          "toPorts": [{"ports": [{"port": p, "protocol": "TCP"}
                                                 for p in ports]}]}],
             "labels": ["test=failclosed"]}]


def in_state(agent: RunningAgent, ep_id: str, state: str) -> dict | None:
    doc = agent.api("GET", f"/v1/endpoint/{ep_id}").json()
    return doc if doc.get("state") == state else None


def serve() -> None:
    nsh.serve_start(PORTS, (53,))


def tcp(dst: str, port: int) -> bool:
    return nsh.tcp_ok(dst, port, 1.0)


def test_attach_whose_policy_cannot_be_written_is_refused_and_leaves_nothing(
        node_netns, workdir, bpf_root, namespaces) -> None:
    agent = start_agent(node_netns, workdir, bpf_root, "--policy-map-size", "4")
    try:
        resp = agent.api("PUT", "/v1/policy", rule_for_b(MANY_PORTS))
        assert resp.status_code == 200, resp.text
        a_ns, b_ns = namespaces(), namespaces()
        a = attach(agent, "ep-a", a_ns, "a")
        assert a.status_code == 201, a.text
        b = attach(agent, "ep-b", b_ns, "b")
        # Before: 201 "ready", running with no policy at all (everything allowed).
        assert b.status_code == 503, b.text
        assert "cpy_policy is full (4 entries)" in b.json()["error"], b.text
        assert agent.api("GET", "/v1/endpoint/ep-b").status_code == 404
        # Nothing half-made: no veth, no address inside, no datapath entries.
        assert "eth0" not in nsh.ip(b_ns, "-br", "link")
        rows = agent.api("GET", "/v1/bpf/endpoint").json()
        assert {r["address"] for r in rows} <= set(a.json()["addressing"].values()), rows
        assert "attach refused" in agent.log()
    finally:
        agent.stop()


def test_failed_regeneration_denies_says_why_and_recovers(
        node_netns, workdir, bpf_root, namespaces) -> None:
    agent = start_agent(node_netns, workdir, bpf_root, "--policy-map-size", "8")
    try:
        a_ns, b_ns = namespaces(), namespaces()
        a = attach(agent, "ep-a", a_ns, "a").json()
        b = attach(agent, "ep-b", b_ns, "b").json()
        assert a["state"] == b["state"] == "ready"
        b4 = b["addressing"]["ipv4"]
        with nsh.NetnsWorker(a_ns) as wa, nsh.NetnsWorker(b_ns) as wb:
            wb.call(serve)
            wa.call(serve)
            assert wa.call(tcp, b4, 80), "no policy selects b yet: a reaches it"

            # b's new policy needs more entries than the map has left.
            resp = agent.api("PUT", "/v1/policy", rule_for_b(["80", *MANY_PORTS]))
            assert resp.status_code == 200, resp.text
            doc = eventually(lambda: in_state(agent, "ep-b", "not-ready"), 20, what="not-ready")
            assert "cpy_policy is full (8 entries)" in doc["state-reason"], doc
            # Denying: not even port 80, which the new rule would allow, nor b's egress.
            assert not wa.call(tcp, b4, 80)
            assert not wb.call(tcp, a["addressing"]["ipv4"], 80)
            assert agent.api("GET", "/v1/endpoint/ep-a").json()["state"] == "ready"
            assert wa.call(nsh.ping, a["gateway"]["ipv4"], 1) == 1

            listing = agent.cli("endpoint", "list")
            assert "ep-b: NOT-READY: policy regeneration failed" in listing.stdout, listing
            health = agent.api("GET", "/v1/healthz").json()
            eps = health["subsystems"]["endpoints"]
            assert eps["status"] == "degraded" and "cpy_policy is full" in eps["message"], eps
            # Retried with back-off: the attempts grow while the cause stays.
            eventually(lambda: agent.api("GET", "/v1/healthz").json()["subsystems"]
                       ["endpoints"]["details"]["retrying"].get("ep-b", {})
                       .get("attempts", 0) >= 3, 20, 0.3, what="three tries")
            assert "endpoint denying all traffic" in agent.log()

            # The cause goes away: b gets its policy and is ready again.
            resp = agent.api("DELETE", "/v1/policy", {"labels": ["test=failclosed"]})
            assert resp.status_code == 200, resp.text
            resp = agent.api("PUT", "/v1/policy", rule_for_b(["80"]))
            assert resp.status_code == 200, resp.text
            doc = eventually(lambda: in_state(agent, "ep-b", "ready"), 20, what="ready again")
            assert not doc.get("state-reason")
            assert eventually(lambda: wa.call(tcp, b4, 80), 10, what="a reaches b:80")
            assert not wa.call(tcp, b4, 8080), "b's policy allows only 80"
            health = agent.api("GET", "/v1/healthz").json()
            assert health["subsystems"]["endpoints"]["status"] == "ok", health
    finally:
        agent.stop()


def test_vanished_namespace_is_noticed_and_released(agent, namespaces) -> None:
    ns = namespaces()
    doc = attach(agent, "ep-v", ns, "v").json()
    addr = doc["addressing"]["ipv4"]
    subprocess.run(["ip", "netns", "del", ns], check=True)  # no DEL reaches the agent
    gone = eventually(lambda: in_state(agent, "ep-v", "not-ready"), 15, 0.2,
                      what="the vanished namespace noticed")
    assert "is gone" in gone["state-reason"] and addr in gone["state-reason"], gone
    assert doc["host-interface"] not in nsh.ip(agent.netns, "-br", "link")
    assert "ep-v" not in agent.api("GET", "/v1/ipam").json()["allocations"].values()
    health = agent.api("GET", "/v1/healthz").json()["subsystems"]["endpoints"]
    assert health["status"] == "degraded" and "is gone" in health["message"], health
    assert agent.api("DELETE", "/v1/endpoint/ep-v").status_code == 204
