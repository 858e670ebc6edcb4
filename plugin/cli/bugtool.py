"""``cilium-py bugtool``: write one archive for a bug report, also when the agent is down."""

from __future__ import annotations

import argparse
import os
import time

from ..bugtool import Collector, write_archive
from .client import AgentClient, CLIError


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bugtool", parents=[parent],
                       help="collect logs, state, maps and kernel facts into one .tar.gz")
    p.add_argument("--archive", help="file to write (default: ./cilium-py-bugtool-TIME.tar.gz)")
    p.add_argument("--metrics-url",
                   help="also fetch Prometheus metrics from here (e.g. http://127.0.0.1:9962/metrics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, client: AgentClient) -> int:
    def api(path: str) -> object:
        return client.get(path)

    try:
        client.get("/v1/healthz")
        reachable = True
    except CLIError:
        reachable = False
    collector = Collector(api=api if reachable else None, metrics_url=args.metrics_url)
    if not reachable:
        collector.errors["agent"] = f"agent not reachable at {client.socket_path}"
    collector.collect()
    path = args.archive or os.path.abspath(
        "cilium-py-bugtool-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ".tar.gz")
    write_archive(collector, path)
    note = "" if reachable else " (agent not reachable: kernel side and logs only)"
    print(f"wrote {path}: {len(collector.files)} files{note}")
    return 0
