"""Node registration, ranges and the shared ipcache, against a real etcd on loopback."""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from cilium_py.errors import PoolExhausted
from cilium_py.node.ranges import claim_node_range, node_ranges
from cilium_py.node.registry import NodeInfo, NodeRegistry
from cilium_py.store.etcd import EtcdStore
from tests.support.etcd import EtcdServer, remove_etcd, start_etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = start_etcd()
    yield server
    remove_etcd(server)


@pytest.fixture
def store(etcd: EtcdServer) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd.url, timeout=2)
    for kv in s.list("cilium-py/"):
        s.delete(kv.key)
    yield s
    s.close()


def until(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``cond`` held; fails the test when it never does."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_concurrent_nodes_get_distinct_ranges_and_keep_them(store: EtcdStore) -> None:
    cluster = ipaddress.ip_network("10.220.0.0/16")
    got: dict[str, ipaddress.IPv4Network] = {}

    def claim(name: str) -> None:
        got[name] = claim_node_range(store, name, cluster, 24)  # type: ignore[assignment]

    threads = [threading.Thread(target=claim, args=(f"n{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(got.values())) == 6
    assert claim_node_range(store, "n3", cluster, 24) == got["n3"]  # a restart keeps it
    assert node_ranges(store, 4) == {str(v): k for k, v in got.items()}


def test_range_exhaustion_is_refused(store: EtcdStore) -> None:
    cluster = ipaddress.ip_network("10.221.0.0/23")
    claim_node_range(store, "a", cluster, 24)
    claim_node_range(store, "b", cluster, 24)
    with pytest.raises(PoolExhausted, match="10.221.0.0/23"):
        claim_node_range(store, "c", cluster, 24)


def _node(name: str, octet: int) -> NodeInfo:
    return NodeInfo(name=name, address=f"198.51.100.{octet}",
                    ipv4_range=f"10.222.{octet}.0/24")


def test_nodes_see_each_other_and_endpoints_within_a_second(etcd: EtcdServer) -> None:
    tag = uuid.uuid4().hex[:6]
    a = NodeRegistry(EtcdStore(etcd.url), _node(f"a-{tag}", 1), ttl=5)
    b = NodeRegistry(EtcdStore(etcd.url), _node(f"b-{tag}", 2), ttl=5)
    a.start()
    b.start()
    try:
        until(lambda: f"a-{tag}" in b.nodes and f"b-{tag}" in a.nodes)
        a.publish({"10.222.1.5/32": 300})
        seen = until(lambda: b.remote_ipcache().get("10.222.1.5/32") == 300)
        assert seen < 1.0
        assert "10.222.1.5/32" not in a.remote_ipcache()  # its own are not remote
        a.withdraw(["10.222.1.5/32"])
        until(lambda: "10.222.1.5/32" not in b.remote_ipcache(), 1.0)
    finally:
        a.stop()
        b.stop()


def test_a_dead_node_disappears_after_its_lease(etcd: EtcdServer) -> None:
    tag = uuid.uuid4().hex[:6]
    a = NodeRegistry(EtcdStore(etcd.url), _node(f"a-{tag}", 3), ttl=2)
    b = NodeRegistry(EtcdStore(etcd.url), _node(f"b-{tag}", 4), ttl=5)
    a.start()
    b.start()
    try:
        a.publish({"10.222.3.7/32": 400})
        until(lambda: f"a-{tag}" in b.nodes and "10.222.3.7/32" in b.remote_ipcache())
        a.stop()  # dies: no more keepalives, no revoke
        until(lambda: f"a-{tag}" not in b.nodes, 8)
        assert "10.222.3.7/32" not in b.remote_ipcache()
    finally:
        b.stop()


def test_etcd_restart_loses_nothing_and_view_resyncs() -> None:
    server = start_etcd()
    tag = uuid.uuid4().hex[:6]
    a = NodeRegistry(EtcdStore(server.url, timeout=1), _node(f"a-{tag}", 5), ttl=20,
                     retry_seconds=0.2)
    b = NodeRegistry(EtcdStore(server.url, timeout=1), _node(f"b-{tag}", 6), ttl=20,
                     retry_seconds=0.2)
    try:
        a.start()
        b.start()
        a.publish({"10.222.5.9/32": 500})
        until(lambda: "10.222.5.9/32" in b.remote_ipcache())
        server.stop()
        # Both must have seen the outage before etcd returns: one noticing first is not
        # enough for the outage count asserted below.
        until(lambda: not b.connected and not a.connected, 30)
        # The last known view stays in force while etcd is away.
        assert b.remote_ipcache()["10.222.5.9/32"] == 500
        server.start()
        a.publish({"10.222.5.10/32": 501})
        until(lambda: b.remote_ipcache().get("10.222.5.10/32") == 501, 45)
        assert b.remote_ipcache()["10.222.5.9/32"] == 500
        until(lambda: a.connected and b.connected, 30)
        assert b.outages >= 1 and b.status()["connected"] is True
    finally:
        a.stop()
        b.stop()
        remove_etcd(server)
