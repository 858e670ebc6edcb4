"""Prometheus metrics of a real agent move as traffic, drops and API calls happen."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningAgent, nsenter, start_agent, unique
from tests.support import netns as nsh

PORT = 9962


def scrape(agent: RunningAgent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = subprocess.run([*nsenter(agent.netns), "curl", "-sf", f"http://127.0.0.1:{PORT}/metrics"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    samples = {}
    for family in text_string_to_metric_families(out):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def lab(node_netns: str, workdir: str, bpf_root: str) -> Iterator[tuple]:
    agent = start_agent(node_netns, workdir, bpf_root,
                        "--prometheus-serve-addr", f"127.0.0.1:{PORT}")
    names, workers = [], {}
    try:
        eps = {}
        for name, labels in (("client", ["container:app=client"]),
                             ("server", ["container:app=server"])):
            ns = unique("cpyt-ep")
            nsh.create_netns(ns)
            names.append(ns)
            resp = agent.api("PUT", f"/v1/endpoint/{name}",
                             {"netns": f"/var/run/netns/{ns}", "labels": labels})
            assert resp.status_code == 201, resp.text
            eps[name] = resp.json()
            workers[name] = nsh.NetnsWorker(ns)
        yield agent, eps, workers
    finally:
        for w in workers.values():
            w.close()
        agent.stop()
        for ns in names:
            nsh.delete_netns(ns)


def test_metrics_count_traffic_drops_and_requests(lab: tuple) -> None:
    agent, eps, workers = lab
    server = eps["server"]["addressing"]["ipv4"]
    before = scrape(agent)
    assert value(before, "cilium_py_endpoints", state="ready") == 2
    # Allowed traffic moves the forwarding counters.
    assert workers["client"].call(nsh.ping, server, 3, 1.0) == 3
    after_ping = scrape(agent)
    fwd = "cilium_py_forward_packets_total"
    assert value(after_ping, fwd, direction="egress", path="from-endpoint-local-delivery") >= \
        value(before, fwd, direction="egress", path="from-endpoint-local-delivery") + 6
    # N denied pings: the policy-denied drop counter moves by exactly N.
    rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
              "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}]}]
    resp = agent.api("PUT", "/v1/policy", rules)
    assert resp.status_code == 200, resp.text
    agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=10")
    mid = scrape(agent)
    drops = "cilium_py_drop_packets_total"
    denied_before = sum(v for (n, labels), v in mid.items()
                        if n == drops and ("reason", "policy-denied") in labels)
    for _ in range(5):
        assert workers["client"].call(nsh.ping, server, 1, 0.3) == 0
    end = scrape(agent)
    denied_after = sum(v for (n, labels), v in end.items()
                       if n == drops and ("reason", "policy-denied") in labels)
    assert denied_after - denied_before == 5
    assert value(end, "cilium_py_policy_rules") == 1
    assert value(end, "cilium_py_policy_revision") >= 2
    assert value(end, "cilium_py_api_requests_total", route="/v1/policy", method="PUT",
                 status="200") >= 1
    assert value(end, "cilium_py_endpoint_regeneration_seconds_count") >= 2
    assert value(end, "cilium_py_policy_import_seconds_count") == 1
    assert value(end, "cilium_py_identities", kind="allocated") >= 2
    assert value(end, "cilium_py_process_resident_memory_bytes") > 0
