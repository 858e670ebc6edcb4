"""L7 policy cost: HTTP requests/s and latency through Envoy vs L4 policy vs no policy.

One agent in a node namespace, two endpoints: a server and a client. Two protocols:

- HTTP/1.1: wrk against a small keep-alive server (asyncio, fixed 2-byte body, so that
  the server is not what limits), port 80;
- HTTP/2 (prior knowledge, as gRPC speaks it): h2load against nghttpd serving a 2-byte
  file, port 8080. Envoy speaks HTTP/2 upstream too.

Three configurations, switched by importing policy in the same run:

- ``none``: no policy (direct delivery between the endpoints);
- ``l4``:   the server admits the client on 80/TCP (L4 entry, no proxy);
- ``l7``:   the same port with an HTTP rule (GET on any path): every request goes
            through the agent's Envoy, which checks it.

Each round runs the three in rotated order (A B C, B C A, C A B ...). Per run:
throughput with ``--connections`` connections (wrk, 1 thread) and latency with one
connection (wrk -c1: each request waits for the previous answer, so p50 is the
request's round trip). Pinned: wrk on ``--client-cpu``, the server on ``--server-cpu``,
Envoy (all its threads) on ``--proxy-cpu``. Ratios are taken to ``none`` within each
round; the load average is recorded at start and end. h2load runs one stream per
connection (-m1), so both protocols wait for each answer the same way.

    python -m tests.bench.bench_l7 [--rounds 3] [--duration 8] [--connections 16]
                                   [--protocols http1,http2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

from tests.bench.common import (
    median_range,
    name,
    namespaces,
    require_root,
    running_agent,
    sh,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# wrk prints this from its done() hook: latency percentiles in microseconds.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50": %d, "p99": %d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"\r\nok")


class _Http(asyncio.Protocol):
    """Answers every request on a keep-alive connection (requests end with CRLFCRLF)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        count = self.buf.count(b"\r\n\r\n")
        if count:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


def serve(port: int) -> None:
    """The server process (inside the server endpoint's namespace)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(_Http, "0.0.0.0", port, backlog=512)
        await asyncio.Event().wait()

    asyncio.run(main())


PORTS = {"http1": 80, "http2": 8080}


def rules(mode: str) -> list[dict]:
    to_ports = []
    for number in PORTS.values():
        port: dict = {"ports": [{"port": str(number), "protocol": "TCP"}]}
        if mode == "l7":
            port["rules"] = {"http": [{"method": "GET", "path": "/.*"}]}
        to_ports.append(port)
    return [{"endpointSelector": {"matchLabels": {"app": "server"}},
             "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                          "toPorts": to_ports}],
             "labels": [{"key": "bench", "value": "l7"}]}]


def apply(agent, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Replace the bench's rule (by its label) with this mode's; ``none`` leaves no rule
    (an endpoint no rule selects allows everything)."""
    resp = agent.api("DELETE", "/v1/policy?labels=bench=l7")
    if resp.status_code not in (200, 404):  # 404: no rule of the bench's yet
        raise RuntimeError(f"policy delete: {resp.status_code} {resp.text}")
    rev = resp.json().get("revision")
    if mode != "none":
        resp = agent.api("PUT", "/v1/policy", rules(mode))
        if resp.status_code != 200:
            raise RuntimeError(f"policy {mode}: {resp.status_code} {resp.text}")
        rev = resp.json()["revision"]
    if rev is not None:
        agent.api("GET", f"/v1/policy/wait/{rev}?timeout=30")


def wrk(client_ns: str, cpu: int, url: str, connections: int, duration: int,
        script: str) -> dict:
    out = sh("ip", "netns", "exec", client_ns, "taskset", "-c", str(cpu), "wrk", "-t1",
             f"-c{connections}", f"-d{duration}s", "-s", script, url,
             timeout=duration + 60)
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    res = json.loads(line)
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    if res["errors"] or res["non2xx"]:
        raise RuntimeError(f"wrk saw errors ({url}): {res}")
    return res


_H2_RPS = re.compile(r"^finished in [0-9.]+s, ([0-9.]+) req/s", re.M)
_H2_DONE = re.compile(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", re.M)


def h2load(client_ns: str, cpu: int, url: str, connections: int, duration: int) -> dict:
    """h2load over HTTP/2 prior knowledge; p50/p99 from its per-request log (us)."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        out = sh("ip", "netns", "exec", client_ns, "taskset", "-c", str(cpu), "h2load",
                 "-t1", f"-c{connections}", "-m1", f"-D{duration}", "--warm-up-time=1",
                 f"--log-file={log.name}", url, timeout=duration + 60)
        times = sorted(int(line.split("\t")[2]) for line in log if line.count("\t") == 2)
    rps, done = _H2_RPS.search(out), _H2_DONE.search(out)
    if rps is None or done is None or not times:
        raise RuntimeError(f"h2load output not understood ({url}):\n{out}")
    if any(int(n) for n in done.groups()[1:]) or "0 4xx, 0 5xx" not in out:
        raise RuntimeError(f"h2load saw errors ({url}):\n{out}")
    return {"rps": float(rps.group(1)), "p50": times[len(times) // 2],
            "p99": times[min(len(times) - 1, len(times) * 99 // 100)]}


def pin_envoy(state_dir: str, cpu: int) -> int:
    """Pin every thread of the agent's Envoy; its pid (0 while none runs)."""
    try:
        pid = int(open(os.path.join(state_dir, "envoy", "envoy.pid")).read())
    except (OSError, ValueError):
        return 0
    sh("taskset", "-a", "-p", "-c", str(cpu), str(pid))
    return pid


def check_path(client_ns: str, url: str, mode: str, protocol: str) -> None:
    """The configuration is what it claims: L7 answers 403 to a denied method, on the
    protocol claimed; both servers answer 200 to anything."""
    version = ["--http2-prior-knowledge"] if protocol == "http2" else ["--http1.1"]
    res = subprocess.run(["ip", "netns", "exec", client_ns, "curl", "-s", "-o", "/dev/null",
                          "-w", "%{http_code} %{http_version}", *version, "-X", "POST",
                          "--max-time", "3", url],
                         capture_output=True, text=True, timeout=10)
    code, _, http_version = res.stdout.partition(" ")
    want = "403" if mode == "l7" else "200"
    if code != want or http_version != {"http1": "1.1", "http2": "2"}[protocol]:
        raise RuntimeError(f"{mode} {protocol}: POST answered {res.stdout!r}, expected "
                           f"{want} over HTTP/{http_version}")


def _table(protocol: str, args: argparse.Namespace, modes: tuple[str, ...],
           results: dict, ratios: dict) -> None:
    tool = {"http1": "wrk", "http2": "h2load"}[protocol]
    print(f"\n{protocol} ({tool}):")
    print(f"| policy | req/s ({args.connections} conns) | ratio to none | p50 us (1 conn) | "
          "added p50 us | p99 us (1 conn) |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        r, q = results[mode], ratios[mode]
        added = q["p50_added"]
        print(f"| {mode} | {statistics.median(r['rps']):.0f} | {median_range(q['rps'])} | "
              f"{statistics.median(r['p50']):.0f} | {statistics.median(added):.0f} "
              f"[{min(added):.0f}-{max(added):.0f}] | {statistics.median(r['p99']):.0f} |")
    print(f"{protocol} req/s against no policy: " + ", ".join(
        f"{m} {statistics.median(ratios[m]['rps']):.2f}x" for m in ("l4", "l7"))
        + f"; L7 adds {statistics.median(ratios['l7']['p50_added']):.0f} us p50 per request")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds per load run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--protocols", default="http1,http2",
                   help="comma-separated: http1 (wrk), http2 (h2load)")
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--proxy-cpu", type=int, default=1)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    require_root()
    protocols = [x for x in args.protocols.split(",") if x]
    if not protocols or set(protocols) - set(PORTS):
        p.error(f"--protocols: choose from {', '.join(PORTS)}")
    modes = ("none", "l4", "l7")
    results = {pr: {m: {"rps": [], "p50": [], "p99": []} for m in modes}
               for pr in protocols}
    ratios: dict[str, dict[str, dict[str, list[float]]]] = {
        pr: {m: {"rps": [], "p50_added": []} for m in modes} for pr in protocols}
    load_start = os.getloadavg()[0]
    with ExitStack() as stack, tempfile.NamedTemporaryFile("w", suffix=".lua") as script, \
            tempfile.TemporaryDirectory(prefix="cpyb-l7-") as docroot:
        script.write(WRK_SCRIPT)
        script.flush()
        with open(os.path.join(docroot, "bench"), "w") as fh:
            fh.write("ok")
        node, srv_ns, cli_ns = name("cpyb-l7n"), name("cpyb-l7s"), name("cpyb-l7c")
        stack.enter_context(namespaces(node, srv_ns, cli_ns))
        agent = stack.enter_context(running_agent(node, "--kafka-proxy", "false"))
        eps = {}
        for ep, ns, label in (("server", srv_ns, "server"), ("client", cli_ns, "client")):
            resp = agent.api("PUT", f"/v1/endpoint/{ep}",
                             {"netns": f"/var/run/netns/{ns}",
                              "labels": [f"container:app={label}"]})
            if resp.status_code != 201:
                raise RuntimeError(resp.text)
            eps[ep] = resp.json()
        pin = ["ip", "netns", "exec", srv_ns, "taskset", "-c", str(args.server_cpu)]
        servers = [subprocess.Popen([*pin, sys.executable, "-m", "tests.bench.bench_l7",
                                     "--serve", str(PORTS["http1"])], cwd=ROOT),
                   subprocess.Popen([*pin, "nghttpd", "--no-tls", "-d", docroot,
                                     str(PORTS["http2"])], stdout=subprocess.DEVNULL)]
        for server in servers:
            stack.callback(lambda s=server: (s.terminate(), s.wait(5)))
        time.sleep(1.0)
        addr = eps["server"]["addressing"]["ipv4"]
        urls = {pr: f"http://{addr}:{PORTS[pr]}/bench" for pr in protocols}
        envoy_pid = 0
        for rnd in range(args.rounds):
            order = modes[rnd % 3:] + modes[:rnd % 3]
            this: dict[str, dict[str, dict]] = {pr: {} for pr in protocols}
            for mode in order:
                apply(agent, mode)
                if mode == "l7":
                    envoy_pid = pin_envoy(agent.state_dir, args.proxy_cpu) or envoy_pid
                for pr in protocols:
                    url = urls[pr]
                    check_path(cli_ns, url, mode, pr)
                    if pr == "http1":
                        wrk(cli_ns, args.client_cpu, url, args.connections, 2,
                            script.name)  # warm
                        load = wrk(cli_ns, args.client_cpu, url, args.connections,
                                   args.duration, script.name)
                        one = wrk(cli_ns, args.client_cpu, url, 1, args.duration,
                                  script.name)
                    else:
                        load = h2load(cli_ns, args.client_cpu, url, args.connections,
                                      args.duration)
                        one = h2load(cli_ns, args.client_cpu, url, 1, args.duration)
                    this[pr][mode] = {"rps": load["rps"], "p50": one["p50"]}
                    r = results[pr][mode]
                    r["rps"].append(load["rps"])
                    r["p50"].append(one["p50"])
                    r["p99"].append(one["p99"])
                    print(f"round {rnd + 1} {pr} {mode:4}: {load['rps']:8.0f} req/s "
                          f"({args.connections} conns, p99 {load['p99']} us); 1 conn: p50 "
                          f"{one['p50']} us p99 {one['p99']} us, {one['rps']:.0f} req/s",
                          flush=True)
            for pr in protocols:
                for mode in modes:
                    ratios[pr][mode]["rps"].append(this[pr][mode]["rps"]
                                                   / this[pr]["none"]["rps"])
                    ratios[pr][mode]["p50_added"].append(this[pr][mode]["p50"]
                                                         - this[pr]["none"]["p50"])
        if not envoy_pid:
            raise RuntimeError("no Envoy ran for the l7 configuration")
    load_end = os.getloadavg()[0]
    print()
    print(f"CPUs: client {args.client_cpu}, server {args.server_cpu}, Envoy {args.proxy_cpu} "
          f"(concurrency 1); {args.rounds} rounds of {args.duration} s runs, rotated; "
          f"load average (1 min) {load_start:.2f} at start, {load_end:.2f} at end")
    for pr in protocols:
        _table(pr, args, modes, results[pr], ratios[pr])
    return 0


if __name__ == "__main__":
    sys.exit(main())
