"""What load balancing costs: new connections through a frontend against the number of
services defined, beside kube-proxy-style iptables measured in the same run; and stream
throughput through a frontend against direct to the backend.

Set-ups, all brought up at once, each in namespaces this script makes:

- cilium-py with N services (N = 1, 1,000, 10,000): one agent per N (its own node
  namespace), a client endpoint and two backend endpoints; the measured service is
  frontend 10.96.0.1:7100 over both backends, the other N-1 have frontends 10.97.x.y:80
  over two addresses nobody uses;
- iptables with N services, built the way kube-proxy builds it, in a node namespace that
  routes two plain veths: nat PREROUTING jumps to a services chain with one
  ``-d VIP -p tcp --dport P -j SVC-i`` rule per service (the measured one last), each
  SVC-i picks one of two SEP chains with ``-m statistic --mode random --probability 0.5``,
  each SEP DNATs to its backend. Rules live only in that namespace.

Measured, rounds rotated:

1. new connections per second and connection time p50/p99 (connect, 1-byte request,
   1-byte answer, close: tests/bench/crr.c, client and servers pinned to CPU0);
2. one iperf3 stream (client CPU0, server CPU1) through a frontend (a one-backend
   service) and direct to that backend, on the cilium-py set-up with 1 service.

    python -m tests.bench.bench_lb [--rounds 3] [--crr-seconds 3] [--seconds 5]
        [--sizes 1,1000,10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from tests.bench.bench_datapath import ns_cmd
from tests.bench.bench_policy import build_crr, load1, routed_pair, wait_for_quiet
from tests.bench.common import name, namespaces, now, require_root, running_agent, sh

CRR_PORT = 7100
IPERF_PORT = 5201
VIP = "10.96.0.1"
IPERF_VIP = "10.96.0.2"
DUMMY_BASE = int(ipaddress.ip_address("10.97.0.0"))
BACKEND_BASE = int(ipaddress.ip_address("10.98.0.0"))
LPORT_LO, LPORT_HI = 10000, 59999


@dataclass
class Setup:
    kind: str
    services: int
    node: str
    client: str
    servers: list[str]
    client_addr: str
    server_addrs: list[str]
    res: dict[str, list[float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.services}"

    def add(self, key: str, value: float) -> None:
        self.res.setdefault(key, []).append(value)


def dummy(i: int) -> tuple[str, list[str]]:
    """Frontend and two backends of the i-th unmeasured service (addresses nobody has)."""
    return (str(ipaddress.ip_address(DUMMY_BASE + i)),
            [str(ipaddress.ip_address(BACKEND_BASE + 2 * i + k)) for k in (0, 1)])


# -- set-ups ----------------------------------------------------------------------


def setup_cilium(stack: ExitStack, services: int, idx: int) -> Setup:
    node, c, s1, s2 = (name(f"cpyb-l{x}") for x in "nabc")
    stack.enter_context(namespaces(node, c, s1, s2))
    agent = stack.enter_context(running_agent(node, "--ipv4-pool", f"10.{244 + idx}.0.0/16",
                                              "--ipv6-pool", "none", "--kafka-proxy", "false"))
    addrs = {}
    for ep, ns in (("client", c), ("s1", s1), ("s2", s2)):
        resp = agent.api("PUT", f"/v1/endpoint/{ep}", {
            "netns": f"/var/run/netns/{ns}", "labels": [f"container:app={ep}"]})
        if resp.status_code != 201:
            raise RuntimeError(f"endpoint {ep}: {resp.status_code} {resp.text}")
        addrs[ep] = resp.json()["addressing"]["ipv4"]

    def put(svc_id: int, vip: str, port: int, backends: list[str]) -> None:
        resp = agent.api("PUT", f"/v1/service/{svc_id}", {
            "frontend-address": {"ip": vip, "port": port},
            "backend-addresses": [{"ip": b, "port": port} for b in backends]})
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"service {svc_id}: {resp.status_code} {resp.text}")

    t0 = now()
    for i in range(services - 1):
        vip, backends = dummy(i)
        put(i + 3, vip, 80, backends)
    put(1, VIP, CRR_PORT, [addrs["s1"], addrs["s2"]])
    put(2, IPERF_VIP, IPERF_PORT, [addrs["s1"]])
    print(f"cilium-py with {services} services: created in {now() - t0:.1f} s", flush=True)
    return Setup("cilium-py", services, node, c, [s1, s2], addrs["client"],
                 [addrs["s1"], addrs["s2"]])


def setup_iptables(stack: ExitStack, services: int, idx: int) -> Setup:
    net = f"10.{231 + idx}.0"
    node, a, b = routed_pair(stack, "cpyb-k", net)
    c = name("cpyb-kc")
    stack.enter_context(namespaces(c))
    # A second backend namespace behind the same node (.4).
    host = "veth4"
    sh("ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0",
       "netns", c)
    sh("ip", "-n", node, "link", "set", host, "up")
    mac = sh("ip", "-n", node, "-br", "link", "show", host).split()[2]
    sh("ip", "-n", c, "addr", "add", f"{net}.4/32", "dev", "eth0")
    sh("ip", "-n", c, "link", "set", "eth0", "up")
    sh("ip", "-n", c, "route", "add", f"{net}.1/32", "dev", "eth0", "scope", "link")
    sh("ip", "-n", c, "route", "add", "default", "via", f"{net}.1", "dev", "eth0")
    sh("ip", "-n", c, "neigh", "add", f"{net}.1", "lladdr", mac, "dev", "eth0",
       "nud", "permanent")
    sh("ip", "-n", node, "route", "add", f"{net}.4/32", "dev", host)
    client, backends = f"{net}.2", [f"{net}.3", f"{net}.4"]
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":CPYB-SERVICES - [0:0]",
             "-A PREROUTING -j CPYB-SERVICES"]
    rules: list[str] = []
    todo = [(dummy(i)[0], 80, dummy(i)[1]) for i in range(services - 1)]
    todo.append((VIP, CRR_PORT, backends))
    for i, (vip, port, bes) in enumerate(todo):
        svc = f"CPYB-SVC-{i}"
        lines.append(f":{svc} - [0:0]")
        rules.append(f"-A CPYB-SERVICES -d {vip}/32 -p tcp -m tcp --dport {port} -j {svc}")
        for k, be in enumerate(bes):
            sep = f"CPYB-SEP-{i}-{k}"
            lines.append(f":{sep} - [0:0]")
            if k == 0:
                rules.append(f"-A {svc} -m statistic --mode random --probability 0.5 -j {sep}")
            else:
                rules.append(f"-A {svc} -j {sep}")
            rules.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {be}:{port}")
    text = "\n".join([*lines, *rules, "COMMIT", ""])
    subprocess.run(["ip", "netns", "exec", node, "iptables-restore"], input=text, text=True,
                   check=True, timeout=600)
    return Setup("iptables", services, node, a, [b, c], client, backends)


# -- measurements -----------------------------------------------------------------


@contextmanager
def crr_servers(crr_bin: str, s: Setup) -> Iterator[None]:
    procs = []
    try:
        for ns, addr in zip(s.servers, s.server_addrs, strict=True):
            p = subprocess.Popen(ns_cmd(ns, crr_bin, "server", addr, str(CRR_PORT), "1", cpu=0),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def crr(crr_bin: str, s: Setup, seconds: float) -> tuple[float, float, float]:
    """Connections per second, p50 and p99 connection time in us, through the frontend."""
    with crr_servers(crr_bin, s):
        out = sh(*ns_cmd(s.client, crr_bin, "client", s.client_addr, VIP, str(CRR_PORT), "1",
                         str(seconds), str(LPORT_LO), str(LPORT_HI), cpu=0),
                 timeout=seconds + 30)
    m = re.search(r"connections (\d+) seconds ([\d.]+) errors (\d+) p50_us ([\d.]+) "
                  r"p99_us ([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"crr client said: {out!r}")
    conns, secs, errors = int(m[1]), float(m[2]), int(m[3])
    if errors > conns // 100:
        raise RuntimeError(f"{s.label}: {errors} failed connections of {conns + errors}")
    return conns / secs, float(m[4]), float(m[5])


def med(values: list[float], fmt: str = "{:.0f}") -> str:
    return (f"{fmt.format(statistics.median(values))} "
            f"[{fmt.format(min(values))}-{fmt.format(max(values))}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crr-seconds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--sizes", default="1,1000,10000")
    args = parser.parse_args()
    require_root()
    sizes = [int(x) for x in args.sizes.split(",")]
    with ExitStack() as stack:
        crr_bin = build_crr(stack)
        setups = [setup_cilium(stack, n, i) for i, n in enumerate(sizes)]
        setups += [setup_iptables(stack, n, i) for i, n in enumerate(sizes)]
        base = setups[0]
        print(f"load average at start {load1():.2f}", flush=True)
        for r in range(args.rounds):
            wait_for_quiet(3.0, 20)
            order = setups[r % len(setups):] + setups[:r % len(setups)]
            for s in order:
                rate, p50, p99 = crr(crr_bin, s, args.crr_seconds)
                s.add("crr", rate)
                s.add("p50", p50)
                s.add("p99", p99)
            pair = [("frontend", IPERF_VIP), ("direct", base.server_addrs[0])]
            for what, dst in (pair if r % 2 == 0 else pair[::-1]):
                base.add(f"iperf_{what}", iperf_to(base, dst, args.seconds))
            print(f"round {r + 1}: " + ", ".join(
                f"{s.label} {s.res['crr'][-1]:.0f}/s" for s in setups), flush=True)
        print(f"load average at end {load1():.2f}\n")
        print("| set-up | services | new connections/s | ratio to 1 service | "
              "connection p50 us | p99 us |")
        print("|---|---|---|---|---|---|")
        for s in setups:
            ref = next(x for x in setups if x.kind == s.kind and x.services == sizes[0])
            ratios = [a / b for a, b in zip(s.res["crr"], ref.res["crr"], strict=True)]
            print(f"| {s.kind} | {s.services} | {med(s.res['crr'])} | "
                  f"{med(ratios, '{:.2f}')} | {med(s.res['p50'], '{:.1f}')} | "
                  f"{med(s.res['p99'], '{:.1f}')} |")
        big_c = next(x for x in setups if x.kind == "cilium-py" and x.services == sizes[-1])
        big_i = next(x for x in setups if x.kind == "iptables" and x.services == sizes[-1])
        vs = [a / b for a, b in zip(big_c.res["crr"], big_i.res["crr"], strict=True)]
        print(f"\ncilium-py / iptables at {sizes[-1]} services: {med(vs, '{:.2f}')}")
        fr = [a / b for a, b in zip(base.res["iperf_frontend"], base.res["iperf_direct"],
                                    strict=True)]
        print(f"iperf3 Gbit/s through the frontend {med(base.res['iperf_frontend'], '{:.1f}')}"
              f", direct {med(base.res['iperf_direct'], '{:.1f}')}, ratio {med(fr, '{:.2f}')}")


def iperf_to(s: Setup, dst: str, seconds: int) -> float:
    """One iperf3 stream from the client to ``dst`` (the frontend or the backend);
    the server listens on every address of the backend's namespace."""
    srv = subprocess.Popen(ns_cmd(s.servers[0], "iperf3", "-s", "-1", cpu=1),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh(*ns_cmd(s.client, "iperf3", "-c", dst, "-t", str(seconds), "-J", cpu=0),
                 timeout=seconds + 30)
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.wait(10)


if __name__ == "__main__":
    main()
