"""Endpoint-to-endpoint TCP throughput and latency on one node, against two peers.

Three set-ups are brought up at once and measured in rotated order (A B C, B C A, ...):

- cilium-py: two endpoints of a real agent (BPF, direct delivery);
- bridge: the same two namespaces on a Linux bridge, as Docker's default network wires
  them;
- routed: plain veths routed by the host, no programs.

iperf3 (1 stream, client CPU0, server CPU1) and sockperf ping-pong (64 B, both on CPU0
"same", and split "cross"): pinned, because a wake-up across CPUs costs more than the
datapath on a 2-vCPU machine. Reports the median [min-max] over rounds and the ratio to
each peer taken within each round.

    python -m tests.bench.bench_datapath [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from contextlib import ExitStack

from tests.bench.common import median_range, name, namespaces, require_root, running_agent, sh


def ns_cmd(ns: str, *argv: str, cpu: int | None = None) -> list[str]:
    cmd = ["ip", "netns", "exec", ns, *argv]
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None else cmd


def iperf(client: str, server: str, addr: str, seconds: int) -> float:
    srv = subprocess.Popen(ns_cmd(server, "iperf3", "-s", "-1", "-B", addr, cpu=1),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh(*ns_cmd(client, "iperf3", "-c", addr, "-t", str(seconds), "-J", cpu=0),
                 timeout=seconds + 30)
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.wait(10)


def sockperf(client: str, server: str, addr: str, seconds: int, cross: bool) -> tuple[float, float]:
    srv = subprocess.Popen(ns_cmd(server, "sockperf", "server", "--tcp", "-i", addr, "-p",
                                  "11111", cpu=1 if cross else 0),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = sh(*ns_cmd(client, "sockperf", "ping-pong", "--tcp", "-i", addr, "-p", "11111",
                         "-m", "64", "-t", str(seconds), "--full-rtt", cpu=0),
                 timeout=seconds + 30)
    finally:
        srv.terminate()
        srv.wait(10)
    pct = {float(p): float(v) for p, v in
           re.findall(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)", out)}
    return pct[50.0], pct[99.0]


def setup_bridge(stack: ExitStack) -> tuple[str, str, str]:
    node, a, b = name("cpyb-bn"), name("cpyb-ba"), name("cpyb-bb")
    stack.enter_context(namespaces(node, a, b))
    sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", node, "addr", "add", "10.240.0.1/24", "dev", "br0")
    sh("ip", "-n", node, "link", "set", "br0", "up")
    for i, ns in ((2, a), (3, b)):
        sh("ip", "-n", node, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", node, "link", "set", f"veth{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.240.0.{i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "10.240.0.1")
    return a, b, "10.240.0.3"


def setup_routed(stack: ExitStack) -> tuple[str, str, str]:
    node, a, b = name("cpyb-rn"), name("cpyb-ra"), name("cpyb-rb")
    stack.enter_context(namespaces(node, a, b))
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "-n", node, "link", "add", "gw0", "type", "veth", "peer", "name", "gw1")
    sh("ip", "-n", node, "addr", "add", "10.241.0.1/32", "dev", "gw0")
    sh("ip", "-n", node, "link", "set", "gw0", "up")
    for i, ns in ((2, a), (3, b)):
        host = f"veth{i}"
        sh("ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", node, "link", "set", host, "up")
        mac = json.loads(sh("ip", "-n", node, "-j", "link", "show", host))[0]["address"]
        sh("ip", "-n", ns, "addr", "add", f"10.241.0.{i}/32", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "10.241.0.1/32", "dev", "eth0", "scope", "link")
        sh("ip", "-n", ns, "route", "add", "default", "via", "10.241.0.1", "dev", "eth0")
        sh("ip", "-n", ns, "neigh", "add", "10.241.0.1", "lladdr", mac, "dev", "eth0",
           "nud", "permanent")
        sh("ip", "-n", node, "route", "add", f"10.241.0.{i}/32", "dev", host)
    return a, b, "10.241.0.3"


def setup_cilium(stack: ExitStack) -> tuple[str, str, str]:
    node, a, b = name("cpyb-cn"), name("cpyb-ca"), name("cpyb-cb")
    stack.enter_context(namespaces(node, a, b))
    agent = stack.enter_context(running_agent(node, "--ipv4-pool", "10.242.0.0/16",
                                              "--ipv6-pool", "none"))
    addrs = []
    for ep, ns in (("bench-a", a), ("bench-b", b)):
        resp = agent.api("PUT", f"/v1/endpoint/{ep}", {"netns": f"/var/run/netns/{ns}",
                                                         "labels": ["container:bench=1"]})
        addrs.append(resp.json()["addressing"]["ipv4"])
    return a, b, addrs[1]


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        setups = {"cilium-py": setup_cilium(stack), "bridge": setup_bridge(stack),
                  "routed": setup_routed(stack)}
        names = list(setups)
        res: dict[str, dict[str, list[float]]] = {
            n: {"gbps": [], "same50": [], "same99": [], "cross50": []} for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for n in order:
                a, b, addr = setups[n]
                res[n]["gbps"].append(iperf(a, b, addr, args.seconds))
                p50, p99 = sockperf(a, b, addr, args.seconds, cross=False)
                res[n]["same50"].append(p50)
                res[n]["same99"].append(p99)
                res[n]["cross50"].append(sockperf(a, b, addr, args.seconds, cross=True)[0])
            print(f"round {rnd + 1}: " + ", ".join(
                f"{n} {res[n]['gbps'][-1]:.1f} Gbit/s {res[n]['same50'][-1]:.1f} us"
                for n in names), flush=True)
    print()
    print(f"{'configuration':<12} {'Gbit/s':<20} {'RTT p50 us same':<20} "
          f"{'RTT p99 us same':<20} {'RTT p50 us cross':<20}")
    for n in names:
        r = res[n]
        print(f"{n:<12} {median_range(r['gbps']):<20} {median_range(r['same50']):<20} "
              f"{median_range(r['same99']):<20} {median_range(r['cross50']):<20}")
    for peer in ("bridge", "routed"):
        tput = [c / p for c, p in zip(res["cilium-py"]["gbps"], res[peer]["gbps"], strict=True)]
        lat = [c / p for c, p in zip(res["cilium-py"]["same50"], res[peer]["same50"],
                                     strict=True)]
        print(f"cilium-py / {peer}: throughput {statistics.median(tput):.2f}x "
              f"[{min(tput):.2f}-{max(tput):.2f}], RTT p50 {statistics.median(lat):.2f}x "
              f"[{min(lat):.2f}-{max(lat):.2f}]")


if __name__ == "__main__":
    main()
