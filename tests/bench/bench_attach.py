"""Attach latency: PUT /v1/endpoint to "ready", 200 in a row, then 1,000 on one node.

Peer in the same run: the same plumbing done by ``ip`` commands (veth, move, addresses,
routes, neighbour), which is what a shell CNI plugin costs, without any BPF.

    python -m tests.bench.bench_attach [--count 200] [--scale 1000]
"""

from __future__ import annotations

import argparse
import time

from tests.bench.common import (
    name,
    namespaces,
    now,
    percentile,
    require_root,
    rss_kib,
    running_agent,
    sh,
)


def ip_plumbing(node: str, ns: str, i: int) -> None:
    host, addr = f"cpyv{i}", f"10.230.{i // 250}.{i % 250 + 2}"
    sh("ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "10.230.255.1/32", "dev", "eth0", "scope", "link")
    sh("ip", "-n", ns, "route", "add", "default", "via", "10.230.255.1", "dev", "eth0")
    sh("ip", "-n", node, "link", "set", host, "up")
    sh("ip", "-n", node, "route", "add", f"{addr}/32", "dev", host)


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--peer", type=int, default=50)
    args = parser.parse_args()

    eps = [name("cpyb-e") for _ in range(args.scale)]
    peers = [name("cpyb-p") for _ in range(args.peer)]
    node, peer_node = name("cpyb-n"), name("cpyb-m")
    with namespaces(node, peer_node, *eps, *peers):
        peer_lat = []
        for i, ns in enumerate(peers):
            t0 = now()
            ip_plumbing(peer_node, ns, i)
            peer_lat.append((now() - t0) * 1000)
        with running_agent(node, "--ipv4-pool", "10.231.0.0/16", "--ipv6-pool",
                           "fd10:231::/108") as agent:
            lat = []
            rss_at = {}
            for i, ns in enumerate(eps):
                t0 = now()
                resp = agent.api("PUT", f"/v1/endpoint/b{i}", {
                    "netns": f"/var/run/netns/{ns}", "labels": [f"container:app=b{i % 10}"]})
                lat.append((now() - t0) * 1000)
                if resp.status_code != 201 or resp.json()["state"] != "ready":
                    raise SystemExit(f"endpoint {i}: {resp.status_code} {resp.text}")
                if i + 1 in (args.count, args.scale):
                    rss_at[i + 1] = rss_kib(agent.proc.pid) / 1024
            first = lat[: args.count]
            print(f"attach, {args.count} endpoints in a row (PUT -> ready):")
            print(f"  cilium-py     p50 {percentile(first, 50):7.1f} ms   "
                  f"p99 {percentile(first, 99):7.1f} ms")
            print(f"  ip(8) peer    p50 {percentile(peer_lat, 50):7.1f} ms   "
                  f"p99 {percentile(peer_lat, 99):7.1f} ms   ({args.peer} endpoints, no BPF)")
            print(f"  ratio p50 cilium-py / ip(8): "
                  f"{percentile(first, 50) / percentile(peer_lat, 50):.2f}x")
            tail = lat[-args.count:]
            print(f"at {args.scale} endpoints: last {args.count} attaches p50 "
                  f"{percentile(tail, 50):.1f} ms p99 {percentile(tail, 99):.1f} ms; agent RSS "
                  + ", ".join(f"{mib:.0f} MiB at {n}" for n, mib in sorted(rss_at.items())))
            t0 = now()
            for i in range(len(eps)):
                agent.api("DELETE", f"/v1/endpoint/b{i}")
            answered = now() - t0
            # The veths and then the addresses go in the agent's reaper (reaper.py).
            while agent.api("GET", "/v1/ipam").json()["allocations"]:
                time.sleep(0.01)
            print(f"delete of {len(eps)} endpoints: answered in {answered / len(eps) * 1000:.1f}"
                  f" ms each; all veths and addresses gone after "
                  f"{(now() - t0) / len(eps) * 1000:.1f} ms each")


if __name__ == "__main__":
    main()
