"""A cluster of cilium-py nodes inside test-made namespaces, for tests and benchmarks.

A "fabric" namespace with a bridge and etcd on it, three node namespaces on the bridge
(198.51.100.1-3, 2001:db8:1::1-3), each with its own agent (--store etcd://...), and
endpoints in their own namespaces. ``teardown`` removes everything by name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.conftest import RunningAgent, start_agent, unique
from tests.support import netns as nsh
from tests.support.etcd import EtcdServer, remove_etcd, start_etcd

FABRIC_V4 = "198.51.100.254"
POOL4 = "10.230.0.0/16"
POOL6 = "fd10:230::/112"


def serve() -> None:
    nsh.serve_start((80, 8080), (53,))


@dataclass
class Node:
    name: str
    netns: str
    address: str
    agent: RunningAgent | None = None
    workdir: str = ""
    bpf_root: str = ""


@dataclass
class Cluster:
    etcd: EtcdServer
    fabric: str
    nodes: list[Node]
    extra_args: list[str]
    namespaces: list[str] = field(default_factory=list)
    workers: dict[str, nsh.NetnsWorker] = field(default_factory=dict)
    eps: dict[str, dict] = field(default_factory=dict)
    netns_of: dict[str, str] = field(default_factory=dict)

    def start_agent(self, node: Node) -> None:
        node.agent = start_agent(
            node.netns, node.workdir, node.bpf_root,
            "--store", self.etcd.url, "--node-name", node.name,
            "--node-address", node.address, "--ipv4-pool", POOL4, "--ipv6-pool", POOL6,
            "--node-lease-ttl", "3", *self.extra_args,
            state_dir=f"{node.workdir}/state",
        )

    def attach(self, node: Node, name: str, labels: list[str]) -> dict:
        ns = unique("cpyt-ep")
        nsh.create_netns(ns)
        self.namespaces.append(ns)
        assert node.agent is not None
        resp = node.agent.api("PUT", f"/v1/endpoint/{name}",
                              {"netns": f"/var/run/netns/{ns}", "labels": labels})
        assert resp.status_code == 201, resp.text
        self.eps[name] = resp.json()
        self.netns_of[name] = ns
        self.workers[name] = nsh.NetnsWorker(ns)
        self.workers[name].call(serve)
        return self.eps[name]

    def addr(self, name: str, fam: str = "ipv4") -> str:
        return self.eps[name]["addressing"][fam]

    def tcp(self, src: str, dst: str, port: int = 80, fam: str = "ipv4") -> bool:
        return self.workers[src].call(nsh.tcp_ok, self.addr(dst, fam), port, 1.0)

    def ping(self, src: str, dst: str, fam: str = "ipv4") -> bool:
        return self.workers[src].call(nsh.ping, self.addr(dst, fam), 1, 1.0) == 1


def until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def build_cluster(extra_args: list[str]) -> Cluster:
    fabric = unique("cpyt-fab")
    nsh.create_netns(fabric)
    try:
        nsh.ip(fabric, "link", "add", "br0", "type", "bridge")
        nsh.ip(fabric, "link", "set", "br0", "up")
        nsh.ip(fabric, "addr", "add", f"{FABRIC_V4}/24", "dev", "br0")
        etcd = start_etcd(host=FABRIC_V4, netns=fabric)
    except BaseException:  # the cluster that would remove the fabric does not exist yet
        nsh.delete_netns(fabric)
        raise
    cluster = Cluster(etcd=etcd, fabric=fabric, nodes=[], extra_args=extra_args)
    cluster.namespaces.append(fabric)
    try:
        for i in (1, 2, 3):
            node_ns = unique("cpyt-node")
            nsh.create_netns(node_ns)
            cluster.namespaces.append(node_ns)
            port = f"cpyfab{i}"
            nsh.add_veth(node_ns, "eth0", fabric, port)
            nsh.ip(fabric, "link", "set", port, "master", "br0", "up")
            nsh.ip(node_ns, "addr", "add", f"198.51.100.{i}/24", "dev", "eth0")
            nsh.ip(node_ns, "addr", "add", f"2001:db8:1::{i}/64", "dev", "eth0", "nodad")
            nsh.ip(node_ns, "link", "set", "eth0", "up")
            node = Node(name=f"node{i}-{unique('n')[-8:]}", netns=node_ns,
                        address=f"198.51.100.{i}", workdir=tempfile.mkdtemp(prefix="cpyt-"),
                        bpf_root=f"/sys/fs/bpf/{unique()}")
            cluster.nodes.append(node)
        # Agents start concurrently, as nodes of a real cluster do.
        threads = [threading.Thread(target=cluster.start_agent, args=(n,))
                   for n in cluster.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(n.agent is not None for n in cluster.nodes)
    except BaseException:
        teardown(cluster)
        raise
    return cluster


def teardown(cluster: Cluster) -> None:
    from cilium_py.health.monitor import health_netns_name

    for w in cluster.workers.values():
        w.close()
    for node in cluster.nodes:
        if node.agent is not None:
            node.agent.stop()
    for node in cluster.nodes:
        nsh.delete_netns(health_netns_name(f"{node.workdir}/state"))
        shutil.rmtree(node.workdir, ignore_errors=True)
        nsh.remove_pins(node.bpf_root)
    remove_etcd(cluster.etcd)
    for ns in reversed(cluster.namespaces):
        nsh.delete_netns(ns)


def ipcache_prefixes(node: Node) -> set[str]:
    assert node.agent is not None
    res = node.agent.cli("bpf", "ipcache", "list", "-o", "json")
    if res.returncode != 0:
        return set()
    return {row["prefix"] for row in json.loads(res.stdout)}


def all_prefixes(c: Cluster) -> set[str]:
    out = set()
    for ep in c.eps.values():
        out.add(ep["addressing"]["ipv4"] + "/32")
        out.add(ep["addressing"]["ipv6"] + "/128")
    return out


