"""Policy cost: per-packet cost against rule count, and time for a policy change.

1. Latency and throughput between two endpoints with 0, 1,000 and 10,000 rules (each a
   fromCIDR /32, so each is also an identity and a policy map entry) in force. Peer in
   the same run: the same allow-list as an iptables chain on a bridge (stateless, as
   pre-BPF plugins enforce), whose cost grows with its length.
2. A rule that flips the verdict for 500 endpoints: time from ``PUT /v1/policy`` until
   ``policy wait`` returns and until a test packet sees the new verdict.

    python -m tests.bench.bench_policy [--sizes 0,1000,10000] [--endpoints 500]
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import tempfile
from contextlib import ExitStack

from tests.bench.bench_datapath import iperf, sockperf
from tests.bench.common import name, namespaces, now, require_root, running_agent, sh


def cidr_rules(count: int) -> list[dict]:
    base = int(ipaddress.ip_address("10.250.0.0"))
    cidrs = [f"{ipaddress.ip_address(base + i)}/32" for i in range(count)]
    rules = []
    for start in range(0, count, 1000):
        rules.append({"endpointSelector": {"matchLabels": {"app": "server"}},
                      "ingress": [{"fromCIDR": cidrs[start:start + 1000]}],
                      "labels": [{"key": "bench", "value": "cidr"}]})
    return rules


ALLOW_CLIENT = {"endpointSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
                "labels": [{"key": "bench", "value": "client"}]}


def iptables_chain(node: str, count: int, client: str) -> None:
    """A stateless allow-list: the client's rule comes after ``count`` others."""
    lines = ["*filter", ":CPYB - [0:0]", "-F CPYB"]
    base = int(ipaddress.ip_address("10.250.0.0"))
    lines += [f"-A CPYB -s {ipaddress.ip_address(base + i)}/32 -j ACCEPT" for i in range(count)]
    lines += [f"-A CPYB -s {client}/32 -j ACCEPT", f"-A CPYB -d {client}/32 -j ACCEPT",
              "-A CPYB -j DROP", "COMMIT", ""]
    subprocess.run(["ip", "netns", "exec", node, "iptables-restore", "--noflush"],
                   input="\n".join(lines), text=True, check=True)


def setup_bridge(stack: ExitStack) -> tuple[str, str, str, str]:
    node, a, b = name("cpyb-pn"), name("cpyb-pa"), name("cpyb-pb")
    stack.enter_context(namespaces(node, a, b))
    sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", node, "link", "set", "br0", "up")
    for i, ns in ((2, a), (3, b)):
        sh("ip", "-n", node, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", node, "link", "set", f"veth{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.243.0.{i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
    iptables_chain(node, 0, "10.243.0.2")
    sh("ip", "netns", "exec", node, "iptables", "-A", "FORWARD", "-j", "CPYB")
    return node, a, b, "10.243.0.3"


def per_packet(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with ExitStack() as stack:
        node, a, b = name("cpyb-qn"), name("cpyb-qa"), name("cpyb-qb")
        stack.enter_context(namespaces(node, a, b))
        agent = stack.enter_context(running_agent(node, "--ipv4-pool", "10.244.0.0/16",
                                                  "--ipv6-pool", "none"))
        addrs = {}
        for ep, ns, app in (("client", a, "client"), ("server", b, "server")):
            resp = agent.api("PUT", f"/v1/endpoint/{ep}", {
                "netns": f"/var/run/netns/{ns}", "labels": [f"container:app={app}"]})
            addrs[ep] = resp.json()["addressing"]["ipv4"]
        bnode, ba, bb, baddr = setup_bridge(stack)
        print(f"{'rules':>6} | {'cilium-py Gbit/s':>16} {'p50 us':>7} {'p99 us':>7} | "
              f"{'iptables Gbit/s':>15} {'p50 us':>7} {'p99 us':>7}")
        base: dict[str, float] = {}
        for size in sizes:
            agent.api("DELETE", "/v1/policy")
            t0 = now()
            rev = agent.api("PUT", "/v1/policy", [ALLOW_CLIENT, *cidr_rules(size)],
                            timeout=600).json()["revision"]
            agent.api("GET", f"/v1/policy/wait/{rev}?timeout=300", timeout=400)
            load_s = now() - t0
            iptables_chain(bnode, size, "10.243.0.2")
            c_g = iperf(a, b, addrs["server"], args.seconds)
            c50, c99 = sockperf(a, b, addrs["server"], args.seconds, cross=False)
            i_g = iperf(ba, bb, baddr, args.seconds)
            i50, i99 = sockperf(ba, bb, baddr, args.seconds, cross=False)
            if size == sizes[0]:
                base = {"c_g": c_g, "c50": c50, "i_g": i_g, "i50": i50}
            print(f"{size:>6} | {c_g:>16.2f} {c50:>7.2f} {c99:>7.2f} | "
                  f"{i_g:>15.2f} {i50:>7.2f} {i99:>7.2f}   (policy import+wait {load_s:.1f} s)")
            print(f"{'':>6} | vs {sizes[0]}: tput {c_g / base['c_g']:.2f}x p50 "
                  f"{c50 / base['c50']:.2f}x | tput {i_g / base['i_g']:.2f}x p50 "
                  f"{i50 / base['i50']:.2f}x", flush=True)


def policy_change(args: argparse.Namespace) -> None:
    count = args.endpoints
    eps = [name("cpyb-w") for _ in range(count)]
    node, client_ns = name("cpyb-wn"), name("cpyb-wc")
    with namespaces(node, client_ns, *eps), running_agent(
            node, "--ipv4-pool", "10.245.0.0/16", "--ipv6-pool", "none") as agent:
        resp = agent.api("PUT", "/v1/endpoint/client", {
            "netns": f"/var/run/netns/{client_ns}", "labels": ["container:app=client"]})
        for i, ns in enumerate(eps):
            resp = agent.api("PUT", f"/v1/endpoint/w{i}", {
                "netns": f"/var/run/netns/{ns}", "labels": ["container:app=worker"]})
        target = resp.json()["addressing"]["ipv4"]
        ping = ["ip", "netns", "exec", client_ns, "ping", "-c", "1", "-W", "0.05", target]
        assert subprocess.run(ping, capture_output=True).returncode == 0
        deny = [{"endpointSelector": {"matchLabels": {"app": "worker"}},
                 "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}]}]
        t0 = now()
        rev = agent.api("PUT", "/v1/policy", deny).json()["revision"]
        agent.api("GET", f"/v1/policy/wait/{rev}?timeout=60")
        t_wait = now() - t0
        while subprocess.run(ping, capture_output=True).returncode == 0:
            pass
        t_packet = now() - t0
        print(f"policy change for {count} endpoints: policy wait returned after "
              f"{t_wait * 1000:.0f} ms; a test packet saw the new verdict after "
              f"{t_packet * 1000:.0f} ms (goal < 1000 ms)")


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,1000,10000")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--skip-change", action="store_true")
    parser.add_argument("--skip-packet", action="store_true")
    args = parser.parse_args()
    tempfile.tempdir = None
    if not args.skip_packet:
        per_packet(args)
    if not args.skip_change:
        policy_change(args)


if __name__ == "__main__":
    main()
