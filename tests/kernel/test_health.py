"""The connectivity monitor of a real agent: its health endpoint and its probes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import RunningAgent, start_agent, unique
from tests.support import netns as nsh


@pytest.fixture
def health_agent(node_netns: str, workdir: str, bpf_root: str) -> Iterator[RunningAgent]:
    agent = start_agent(node_netns, workdir, bpf_root, "--health-checking", "true",
                        "--health-interval", "0.5")
    try:
        yield agent
    finally:
        agent.stop()
        _remove_health_ns(workdir)


def _remove_health_ns(workdir: str) -> None:
    from cilium_py.health.monitor import health_netns_name

    nsh.delete_netns(health_netns_name(f"{workdir}/state"))


def wait_for(agent: RunningAgent, cond, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        doc = agent.api("GET", "/v1/health").json()
        if cond(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"health never got there: {json.dumps(doc, indent=1)}")


def target(doc: dict, prefix: str) -> list[dict]:
    return [t for t in doc["targets"] if t["name"].startswith(prefix)]


def test_health_endpoint_and_probes_of_local_endpoints(health_agent: RunningAgent) -> None:
    agent = health_agent
    eps = agent.api("GET", "/v1/endpoint").json()
    health = [e for e in eps if e["id"] == "cilium-health"]
    assert health and health[0]["identity"] == 4 and health[0]["state"] == "ready"
    ns = unique("cpyt-ep")
    nsh.create_netns(ns)
    try:
        resp = agent.api("PUT", "/v1/endpoint/web", {"netns": f"/var/run/netns/{ns}",
                                                       "labels": ["container:app=web"]})
        assert resp.status_code == 201, resp.text
        doc = wait_for(agent, lambda d: len(target(d, "endpoint/web/")) == 2 and all(
            t["reachable"] for t in target(d, "endpoint/web/")))
        web = target(doc, "endpoint/web/ipv4")[0]
        assert web["probes"]["icmp"]["latency-ms"] > 0 and web["last-probe"]
        assert all(t["reachable"] for t in target(doc, "health-endpoint/cilium-health/"))
        # The container's interface goes down: the probes fail and the CLI says so.
        nsh.ip(ns, "link", "set", "eth0", "down")
        doc = wait_for(agent, lambda d: not any(t["reachable"]
                                                for t in target(d, "endpoint/web/")))
        res = agent.cli("health", "status")
        assert res.returncode == 1 and "FAILED" in res.stdout, res.stdout
    finally:
        agent.api("DELETE", "/v1/endpoint/web")
        nsh.delete_netns(ns)


def test_health_endpoint_survives_an_agent_restart(node_netns: str, workdir: str,
                                                   bpf_root: str) -> None:
    flags = ("--health-checking", "true", "--health-interval", "0.5")
    agent = start_agent(node_netns, workdir, bpf_root, *flags)
    try:
        first = agent.api("GET", "/v1/endpoint/cilium-health").json()
        agent.stop()
        agent = start_agent(node_netns, workdir, bpf_root, *flags)
        again = agent.api("GET", "/v1/endpoint/cilium-health").json()
        assert again["addressing"] == first["addressing"]
        wait_for(agent, lambda d: target(d, "health-endpoint/cilium-health/ipv4")
                 and target(d, "health-endpoint/cilium-health/ipv4")[0]["reachable"])
    finally:
        agent.stop()
        _remove_health_ns(workdir)
