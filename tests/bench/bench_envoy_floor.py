"""What Envoy itself costs, and what cilium-py's Envoy configuration adds to it.

bench_l7 measures L7 policy end to end (transparent redirect, RBAC, original source).
This benchmark separates the proxy's floor from the configuration cilium-py writes, on
loopback, with the same server, client and pinning as bench_l7:

- ``direct``:     wrk -> server;
- ``envoy``:      wrk -> a stock Envoy (HTTP connection manager with the router filter
                  only, a static route) -> server: the peer, the least any Envoy costs;
- ``cilium-py``:  wrk -> Envoy running the HTTP connection manager that
                  ``cilium_py.proxy.envoy.config`` generates (RBAC per route from a route
                  file, local-reply mapping, JSON access log, HTTP/1 + HTTP/2 codec) with
                  an RBAC policy shaped like the agent's for a ``GET /.*`` rule -> server.

Both Envoys run for the whole benchmark, pinned to ``--proxy-cpu`` with concurrency 1;
each round runs the three in rotated order. A POST through the cilium-py configuration
must get 403, so the RBAC filter is proven to be on the path.

    python -m tests.bench.bench_envoy_floor [--rounds 3] [--duration 6] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from typing import Any

from cilium_py.policy import HTTPRule
from cilium_py.proxy.envoy import config as envoy_config
from cilium_py.proxy.envoy.rbac import http_rule_permission
from cilium_py.proxy.envoy.supervisor import envoy_binary
from cilium_py.proxy.redirects import INGRESS
from tests.bench.bench_l7 import WRK_SCRIPT
from tests.bench.common import free_port, median_range, require_root, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUTE = INGRESS
CLIENT = "127.0.0.1"


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _bootstrap(admin: str, listen: int, hcm: dict[str, Any], cluster: dict[str, Any]
               ) -> dict[str, Any]:
    return {"node": {"id": "bench", "cluster": "bench"},
            "admin": {"address": {"pipe": {"path": admin, "mode": 0o600}}},
            "static_resources": {
                "listeners": [{"name": "bench", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [{"filters": [hcm]}]}],
                "clusters": [cluster]}}


def stock_envoy(admin: str, listen: int, server: int) -> dict[str, Any]:
    """The peer: an HTTP connection manager with nothing but the router."""
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": envoy_config._HCM, "stat_prefix": "stock", "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": ""}, "route": {"cluster": "server", "timeout": "0s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": envoy_config._T + "envoy.extensions.filters.http.router.v3.Router"}}]}}
    return _bootstrap(admin, listen, hcm, _static_cluster("server", server))


def agent_rbac(port: int) -> dict[str, Any]:
    """RBAC rules shaped like ``rbac.redirect_policy`` writes for an ingress ``GET /.*``
    rule from one peer address to ``port``: destination address and port, then the HTTP
    match."""
    permission = {"and_rules": {"rules": [
        {"destination_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}},
        {"destination_port": port},
        http_rule_permission(HTTPRule(method="GET", path="/.*"))]}}
    principal = {"direct_remote_ip": {"address_prefix": CLIENT, "prefix_len": 32}}
    return {"action": "ALLOW", "policies": {"bench": {
        "permissions": [permission], "principals": [principal]}}}


def cilium_py_envoy(paths: envoy_config.EnvoyPaths, listen: int, server: int
                    ) -> dict[str, Any]:
    """cilium-py's connection manager (``config._hcm``) and route file, static upstream."""
    route = envoy_config.route_config(ROUTE, agent_rbac(listen), "1")
    with open(paths.routes(ROUTE), "w") as fh:
        json.dump(route, fh)
    hcm = envoy_config._hcm(paths, INGRESS, ROUTE, original_src=False)
    cluster = _static_cluster(envoy_config._cluster_name(ROUTE), server)
    return _bootstrap(paths.admin_socket, listen, hcm, cluster)


def wrk(cpu: int, port: int, connections: int, duration: int, script: str) -> dict:
    out = subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}",
                          f"-d{duration}s", "-s", script, f"http://127.0.0.1:{port}/bench"],
                         capture_output=True, text=True, timeout=duration + 60, check=True)
    res = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
    if res["errors"] or res["non2xx"]:
        raise RuntimeError(f"wrk saw errors on port {port}: {res}")
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def post_status(port: int) -> int:
    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "--max-time", "3", f"http://127.0.0.1:{port}/bench"],
                         capture_output=True, text=True, timeout=10)
    return int(res.stdout or 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--proxy-cpu", type=int, default=1)
    args = p.parse_args()
    require_root()
    binary = envoy_binary()
    modes = ("direct", "envoy", "cilium-py")
    rps: dict[str, list[float]] = {m: [] for m in modes}
    p50: dict[str, list[int]] = {m: [] for m in modes}
    vs_stock: list[float] = []
    added: list[int] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="cpyb-envoy-") as work:
        script = os.path.join(work, "report.lua")
        with open(script, "w") as fh:
            fh.write(WRK_SCRIPT)
        ports = {m: free_port() for m in modes}
        procs = [subprocess.Popen(["taskset", "-c", str(args.server_cpu), sys.executable,
                                   "-m", "tests.bench.bench_l7", "--serve",
                                   str(ports["direct"])], cwd=ROOT)]
        configs = {"envoy": stock_envoy(os.path.join(work, "stock-admin.sock"),
                                        ports["envoy"], ports["direct"])}
        paths = envoy_config.EnvoyPaths(os.path.join(work, "cilium-py"))
        os.makedirs(paths.root)
        configs["cilium-py"] = cilium_py_envoy(paths, ports["cilium-py"], ports["direct"])
        for mode, doc in configs.items():
            path = os.path.join(work, f"{mode}.json")
            with open(path, "w") as fh:
                json.dump(doc, fh)
            procs.append(subprocess.Popen(
                ["taskset", "-c", str(args.proxy_cpu), binary, "-c", path, "--concurrency",
                 "1", "--disable-hot-restart", "--log-level", "error",
                 "--log-path", os.path.join(work, f"{mode}.log")]))
        for proc in procs:
            stack.callback(lambda pr=proc: (pr.terminate(), pr.wait(10)))
        for mode in modes:
            wait_port(ports[mode])
        if post_status(ports["cilium-py"]) != 403 or post_status(ports["envoy"]) != 200:
            raise RuntimeError("the cilium-py configuration must deny a POST (403) and the "
                               "stock one allow it (200)")
        for rnd in range(args.rounds):
            order = modes[rnd % 3:] + modes[:rnd % 3]
            this: dict[str, tuple[float, int]] = {}
            for mode in order:
                wrk(args.client_cpu, ports[mode], args.connections, 2, script)  # warm
                load = wrk(args.client_cpu, ports[mode], args.connections, args.duration,
                           script)
                one = wrk(args.client_cpu, ports[mode], 1, args.duration, script)
                this[mode] = (load["rps"], one["p50"])
                rps[mode].append(load["rps"])
                p50[mode].append(one["p50"])
                print(f"round {rnd + 1} {mode:9}: {load['rps']:8.0f} req/s "
                      f"({args.connections} conns); 1 conn p50 {one['p50']} us", flush=True)
            vs_stock.append(this["cilium-py"][0] / this["envoy"][0])
            added.append(this["cilium-py"][1] - this["envoy"][1])
    print()
    print(f"CPUs: wrk {args.client_cpu}, server {args.server_cpu}, Envoy {args.proxy_cpu} "
          f"(concurrency 1); {args.rounds} rounds of {args.duration} s, rotated; loopback")
    print(f"| path | req/s ({args.connections} conns) | p50 us (1 conn) |")
    print("|---|---|---|")
    for mode in modes:
        print(f"| {mode} | {statistics.median(rps[mode]):.0f} | "
              f"{statistics.median(p50[mode]):.0f} |")
    print(f"stock Envoy against direct: "
          f"{statistics.median(rps['envoy']) / statistics.median(rps['direct']):.2f}x req/s; "
          f"cilium-py's configuration against stock Envoy: {median_range(vs_stock)} req/s, "
          f"{statistics.median(added):+.0f} us p50 [{min(added):+d}..{max(added):+d}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
