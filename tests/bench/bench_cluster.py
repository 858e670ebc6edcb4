"""Across nodes: the overlay against direct routing and plain routed veths, policy change
propagation, and identity allocation with three agents at once.

Two three-node clusters run side by side (tests/support/cluster.py), one with the VXLAN
overlay and one with direct routing; the plain peer is a pair of veths without programs
in the tunnel cluster's node namespaces, routed over the same fabric. All three are
measured in rotated order, iperf3 (1 stream, client CPU0, server CPU1) and sockperf
ping-pong (64 B, both ends on CPU0).

Then, on the tunnel cluster: a label added on node 3 until node 1 lets the endpoint in
(and removed until it is refused again), many times: p50/p99 from the PATCH to the
first connection that sees the new verdict (probes every 10 ms with 50 ms connects).

Last, identity allocation through the real allocator by three processes at once, each
allocating the same 100 label sets in its own order: against etcd and, as the peer,
against the embedded store.

    python -m tests.bench.bench_cluster [--rounds 3] [--seconds 5] [--changes 30]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from contextlib import ExitStack

from tests.bench.bench_datapath import iperf, sockperf
from tests.bench.common import median_range, percentile, require_root
from tests.support import netns as nsh
from tests.support.cluster import Cluster, all_prefixes, build_cluster, ipcache_prefixes, until
from tests.support.cluster import teardown as teardown_cluster
from tests.support.etcd import remove_etcd, start_etcd


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def endpoints(c: Cluster, tag: str) -> tuple[str, str, str]:
    """Client namespace on node 2, server namespace on node 1, server address."""
    n1, n2, _ = c.nodes
    server = c.attach(n1, f"srv-{tag}", ["container:app=server"])
    c.attach(n2, f"cli-{tag}", ["container:app=client"])
    for node in c.nodes[:2]:
        until(lambda node=node: len(ipcache_prefixes(node) & all_prefixes(c)) >= 4, 15)
    return c.netns_of[f"cli-{tag}"], c.netns_of[f"srv-{tag}"], server["addressing"]["ipv4"]


def plain_pair(c: Cluster) -> tuple[str, str, str]:
    """Two namespaces behind node 1 and node 2 on plain veths, routed over the fabric."""
    n1, n2, _ = c.nodes
    out = []
    for i, node in ((1, n1), (2, n2)):
        ns = nsh.unique_name("cpyb-pl")
        nsh.create_netns(ns)
        c.namespaces.append(ns)
        nsh.add_veth(node.netns, f"pl{i}", ns, "eth0")
        nsh.ip(node.netns, "addr", "add", f"10.239.{i}.1/24", "dev", f"pl{i}")
        nsh.ip(node.netns, "link", "set", f"pl{i}", "up")
        nsh.ip(ns, "addr", "add", f"10.239.{i}.2/24", "dev", "eth0")
        nsh.ip(ns, "link", "set", "eth0", "up")
        nsh.ip(ns, "route", "add", "default", "via", f"10.239.{i}.1")
        other = 3 - i
        nsh.ip(node.netns, "route", "add", f"10.239.{other}.0/24", "via", f"198.51.100.{other}")
        out.append(ns)
    return out[1], out[0], "10.239.1.2"


def change_latency(c: Cluster, rounds: int) -> tuple[list[float], list[float]]:
    n1, _, n3 = c.nodes
    assert n1.agent is not None and n3.agent is not None
    c.attach(n3, "prober", ["container:app=prober"])
    server = c.addr("srv-t")
    rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
              "ingress": [{"fromEndpoints": [{"matchLabels": {"trusted": "yes"}},
                                             {"matchLabels": {"app": "client"}}]}]}]
    rev = n1.agent.api("PUT", "/v1/policy", rules).json()["revision"]
    n1.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=10")
    until(lambda: not c.workers["prober"].call(nsh.tcp_ok, server, 80, 0.05), 10)
    allow, deny = [], []
    for _ in range(rounds):
        for label_op, want, sink in (("add", True, allow), ("delete", False, deny)):
            start = time.monotonic()
            n3.agent.api("PATCH", "/v1/endpoint/prober/labels",
                         {label_op: ["container:trusted=yes"]})
            met = c.workers["prober"].call(probe_until, server, 80, want, 10.0, timeout=30)
            sink.append((met - start) * 1000)
    n1.agent.api("DELETE", "/v1/policy")
    return allow, deny


def probe_until(dst: str, port: int, want: bool, limit: float) -> float:
    """In the prober's namespace: monotonic time when a connection first gives ``want``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ok = nsh.tcp_ok(dst, port, 0.05)
        if ok == want:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError("the new verdict never arrived")


def _allocate(url: str, node: str, seed: int, out: mp.Queue) -> None:
    from cilium_py.identity import IdentityAllocator
    from cilium_py.labels import LabelSet
    from cilium_py.store import open_store

    store = open_store(url, tempfile.gettempdir())
    alloc = IdentityAllocator(store, prefix=f"bench-{seed // 1000}/", node=node)
    order = list(range(100))
    random.Random(seed).shuffle(order)
    times = []
    for i in order:
        labels = LabelSet.parse([f"container:bench=set{i}"])
        t = time.perf_counter()
        alloc.allocate(labels, f"ep{i}")
        times.append((time.perf_counter() - t) * 1000)
    out.put(times)
    store.close()


def allocation_latency(url: str, tag: int) -> list[float]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate, args=(url, f"node{i}", tag * 1000 + i, out))
             for i in range(3)]
    for p in procs:
        p.start()
    times: list[float] = []
    for _ in procs:
        times.extend(out.get(timeout=300))
    for p in procs:
        p.join(30)
    return times


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    print(f"load average at start: {load()}")
    with ExitStack() as stack:
        tunnel = build_cluster([])
        stack.callback(teardown_cluster, tunnel)
        direct = build_cluster(["--tunnel", "disabled"])
        stack.callback(teardown_cluster, direct)
        setups = {"tunnel": endpoints(tunnel, "t"), "direct": endpoints(direct, "d"),
                  "plain": plain_pair(tunnel)}
        names = list(setups)
        res = {n: {"gbps": [], "p50": [], "p99": []} for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for n in order:
                client, server, addr = setups[n]
                res[n]["gbps"].append(iperf(client, server, addr, args.seconds))
                p50, p99 = sockperf(client, server, addr, args.seconds, cross=False)
                res[n]["p50"].append(p50)
                res[n]["p99"].append(p99)
            print(f"round {rnd + 1}: " + ", ".join(
                f"{n} {res[n]['gbps'][-1]:.2f} Gbit/s {res[n]['p50'][-1]:.1f} us"
                for n in names), flush=True)
        print()
        print(f"{'path':<8} {'Gbit/s':<22} {'RTT p50 us':<22} {'RTT p99 us':<22}")
        for n in names:
            r = res[n]
            print(f"{n:<8} {median_range(r['gbps']):<22} {median_range(r['p50']):<22} "
                  f"{median_range(r['p99']):<22}")
        for peer in ("direct", "plain"):
            tput = [a / b for a, b in zip(res["tunnel"]["gbps"], res[peer]["gbps"], strict=True)]
            rtt = [a / b for a, b in zip(res["tunnel"]["p50"], res[peer]["p50"], strict=True)]
            print(f"tunnel / {peer}: throughput {statistics.median(tput):.2f}x "
                  f"[{min(tput):.2f}-{max(tput):.2f}], RTT p50 {statistics.median(rtt):.2f}x")
        allow, deny = change_latency(tunnel, args.changes)
        print()
        print(f"label change on node 3 enforced on node 1 ({args.changes} each way, ms): "
              f"allow p50 {percentile(allow, 50):.1f} p99 {percentile(allow, 99):.1f}; "
              f"deny p50 {percentile(deny, 50):.1f} p99 {percentile(deny, 99):.1f}")
    etcd = start_etcd()
    try:
        etcd_times = allocation_latency(etcd.url, 1)
    finally:
        remove_etcd(etcd)
    with tempfile.TemporaryDirectory(prefix="cpyb-") as tmp:
        sqlite_times = allocation_latency(f"sqlite://{tmp}/store.db", 2)
    print()
    print("identity allocation, 3 processes x 100 label sets at once (ms): "
          f"etcd p50 {percentile(etcd_times, 50):.2f} p99 {percentile(etcd_times, 99):.2f}; "
          f"embedded store p50 {percentile(sqlite_times, 50):.2f} "
          f"p99 {percentile(sqlite_times, 99):.2f}")
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
