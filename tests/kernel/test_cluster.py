"""Three nodes sharing one etcd: cluster-wide identities, the overlay, policy across nodes.

The lab: a "fabric" namespace with a bridge and etcd on it, three node namespaces on the
bridge (198.51.100.1-3, 2001:db8:1::1-3), each with its own agent (--store etcd://...),
and endpoints in their own namespaces on each node. Everything is test-made and removed
by name at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import unique
from tests.support import netns as nsh
from tests.support.cluster import (
    Cluster,
    Node,
    all_prefixes,
    build_cluster,
    ipcache_prefixes,
    teardown,
    until,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = build_cluster(["--health-checking", "true", "--health-interval", "1"])
    try:
        n1, n2, n3 = c.nodes
        c.attach(n1, "server", ["container:app=server"])
        c.attach(n2, "client", ["container:app=client"])
        c.attach(n3, "other", ["container:app=other"])
        # Every node knows every endpoint before the tests start.
        for node in c.nodes:
            until(lambda node=node: len(ipcache_prefixes(node) & all_prefixes(c)) == 6, 15)
        yield c
    finally:
        teardown(c)


def test_nodes_get_distinct_ranges_and_see_each_other(cluster: Cluster) -> None:
    ranges = set()
    for node in cluster.nodes:
        assert node.agent is not None
        health = node.agent.api("GET", "/v1/healthz").json()
        sub = health["subsystems"]["cluster"]
        assert sub["status"] == "ok", sub
        details = sub["details"]
        assert sorted(n["name"] for n in details["nodes"]) == sorted(
            n.name for n in cluster.nodes)
        ranges.add(details["ipv4-range"])
        ranges.add(details["ipv6-range"])
    assert len(ranges) == 6
    assert len({ep["addressing"]["ipv4"] for ep in cluster.eps.values()}) == 3


def test_cross_node_ping_and_tcp_over_the_tunnel(cluster: Cluster) -> None:
    for fam in ("ipv4", "ipv6"):
        assert cluster.ping("client", "server", fam), fam
        assert cluster.tcp("client", "server", 80, fam), fam
        assert cluster.tcp("server", "other", 8080, fam), fam
    # It went through the overlay, not the host stack: the overlay counters moved.
    n1 = cluster.nodes[0].agent
    assert n1 is not None
    metrics = json.loads(n1.cli("bpf", "metrics", "list", "-o", "json").stdout)
    text = json.dumps(metrics)
    assert "from-overlay-local-delivery" in text and "from-endpoint-overlay" in text


def test_health_probes_reach_the_other_nodes_health_endpoints(cluster: Cluster) -> None:
    n1 = cluster.nodes[0].agent
    assert n1 is not None
    others = {n.name for n in cluster.nodes[1:]}

    def remote_ok() -> bool:
        doc = n1.api("GET", "/v1/health").json()
        seen = {t["name"].split("/")[1] for t in doc["targets"]
                if t["kind"] == "health-endpoint" and t["reachable"]
                and not t["name"].startswith("health-endpoint/cilium-health/")}
        nodes = {t["name"].split("/")[1] for t in doc["targets"]
                 if t["kind"] == "node" and t["reachable"]}
        return seen == others and nodes == others

    until(remote_ok, 20)


def test_identities_are_cluster_wide_and_policy_enforced_on_them(cluster: Cluster) -> None:
    server_id = cluster.eps["server"]["identity"]
    client_id = cluster.eps["client"]["identity"]
    for node in cluster.nodes:
        assert node.agent is not None
        ids = {i["id"] for i in node.agent.api("GET", "/v1/identity").json()}
        assert {server_id, client_id} <= ids
    # A rule imported on node 2 is enforced by node 1 for its server endpoint.
    n1, n2, _ = cluster.nodes
    assert n1.agent is not None and n2.agent is not None
    rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
              "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}]
    resp = n2.agent.api("PUT", "/v1/policy", rules)
    assert resp.status_code == 200, resp.text
    try:
        until(lambda: not cluster.tcp("other", "server", 80), 5)
        for fam in ("ipv4", "ipv6"):
            assert cluster.tcp("client", "server", 80, fam), fam
            assert not cluster.tcp("other", "server", 80, fam), fam
        drops = n1.agent.cli("bpf", "drops", "list", "-o", "json").stdout
        assert '"policy-denied"' in drops
    finally:
        n2.agent.api("DELETE", "/v1/policy")
        until(lambda: cluster.tcp("other", "server", 80), 5)


def test_concurrent_attaches_of_the_same_labels_get_one_identity(cluster: Cluster) -> None:
    results: dict[str, int] = {}
    labels = ["container:app=replica", f"container:run={unique('r')}"]

    def attach(node: Node, name: str) -> None:
        results[name] = cluster.attach(node, name, labels)["identity"]

    threads = [threading.Thread(target=attach, args=(n, f"replica{i}"))
               for i, n in enumerate(cluster.nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len(set(results.values())) == 1, results


def test_label_change_on_one_node_is_enforced_on_another(cluster: Cluster) -> None:
    # How fast: tests/bench/bench_cluster.py measures it (timing asserts are flaky).
    n1, n2, n3 = cluster.nodes
    assert n1.agent is not None and n3.agent is not None
    rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
              "ingress": [{"fromEndpoints": [{"matchLabels": {"trusted": "yes"}}]}]}]
    rev = n1.agent.api("PUT", "/v1/policy", rules).json()["revision"]
    n1.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=10")
    try:
        until(lambda: not cluster.tcp("other", "server", 80), 5)
        resp = n3.agent.api("PATCH", "/v1/endpoint/other/labels",
                            {"add": ["container:trusted=yes"]})
        assert resp.status_code == 200, resp.text
        until(lambda: cluster.tcp("other", "server", 80), 5, step=0.02)
    finally:
        n3.agent.api("PATCH", "/v1/endpoint/other/labels",
                     {"delete": ["container:trusted=yes"]})
        n1.agent.api("DELETE", "/v1/policy")
        until(lambda: cluster.tcp("other", "server", 80), 5)


def test_etcd_restart_mid_traffic_breaks_nothing(cluster: Cluster) -> None:
    ids_before = {n: cluster.eps[n]["identity"] for n in ("server", "client", "other")}
    server = cluster.addr("server")
    cluster.workers["server"].call(nsh.tcp_sink_start, "0.0.0.0", 9100)
    cluster.workers["client"].call(nsh.tcp_stream_start, server, 9100, b"x" * 100, 0.05)
    time.sleep(0.5)
    cluster.etcd.stop()
    try:
        n2 = cluster.nodes[1].agent
        assert n2 is not None
        until(lambda: n2.api("GET", "/v1/healthz").json()["subsystems"]["cluster"]["status"]
              == "degraded", 15)
        # Enforcement and connectivity carry on with the last known state.
        assert cluster.tcp("client", "server", 80)
        assert cluster.ping("other", "server")
        # A new endpoint whose labels have a known identity still comes up, and
        # reaches the other node (the tunnel carries its identity).
        late = cluster.attach(cluster.nodes[1], "late-client", ["container:app=client"])
        assert late["identity"] == ids_before["client"]
        assert cluster.tcp("late-client", "server", 80)
    finally:
        cluster.etcd.start()
    until(lambda: n2.api("GET", "/v1/healthz").json()["subsystems"]["cluster"]["status"]
          == "ok", 20)
    result = cluster.workers["client"].call(nsh.tcp_stream_stop, 9100)
    assert result.get("error") is None, result
    got = cluster.workers["server"].call(nsh.tcp_sink_result, 9100)
    assert got["error"] is None and got["bytes"] == result["sent"] > 0, (got["bytes"], result)
    for name, before in ids_before.items():
        ep = cluster.nodes[["server", "client", "other"].index(name)].agent
        assert ep is not None
        assert ep.api("GET", f"/v1/endpoint/{name}").json()["identity"] == before


def test_a_killed_node_disappears_from_the_others(cluster: Cluster) -> None:
    # Runs last in the module: node 3 is gone afterwards.
    n1, _, n3 = cluster.nodes
    assert n1.agent is not None and n3.agent is not None
    other = cluster.addr("other") + "/32"
    assert other in ipcache_prefixes(n1)
    n3.agent.stop(sig=9)
    n3.agent = None
    cluster.workers.pop("other").close()
    nsh.delete_netns(n3.netns)
    cluster.namespaces.remove(n3.netns)

    def gone() -> bool:
        sub = n1.agent.api("GET", "/v1/healthz").json()["subsystems"]["cluster"]
        return n3.name not in [n["name"] for n in sub["details"]["nodes"]]

    until(gone, 15)
    until(lambda: other not in ipcache_prefixes(n1), 5)


def test_direct_routing_mode_routes_per_node_range() -> None:
    """--tunnel disabled: routes via the other node; identities from the ipcache."""
    c = build_cluster(["--tunnel", "disabled"])
    try:
        n1, n2, n3 = c.nodes
        c.attach(n1, "server", ["container:app=server"])
        c.attach(n2, "client", ["container:app=client"])
        c.attach(n3, "other", ["container:app=other"])
        for node in c.nodes:
            until(lambda node=node: len(ipcache_prefixes(node) & all_prefixes(c)) == 6, 15)
        routes = nsh.ip(n2.netns, "route", "show", "proto", str(0xC7))
        assert "via 198.51.100.1" in routes, routes
        for fam in ("ipv4", "ipv6"):
            assert c.ping("client", "server", fam), fam
            assert c.tcp("client", "server", 80, fam), fam
        assert n1.agent is not None
        rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
                  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}]
        rev = n1.agent.api("PUT", "/v1/policy", rules).json()["revision"]
        n1.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=10")
        assert c.tcp("client", "server", 80)
        assert not c.tcp("other", "server", 80)
        tunnel = n1.agent.api("GET", "/v1/bpf/tunnel").json()
        assert tunnel == []  # nothing went into an overlay
    finally:
        teardown(c)
