"""``cilium-py health status``: what the connectivity monitor last saw of every target."""

from __future__ import annotations

import argparse

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("health", help="connectivity health of endpoints and nodes")
    hsub = p.add_subparsers(dest="health_cmd", metavar="status")
    hsub.required = True
    st = hsub.add_parser("status", parents=[parent], help="reachability and latency per target")
    st.set_defaults(func=run_status)


def _probe(p: dict) -> str:
    if p.get("reachable"):
        return f"{p['latency-ms']:.3f} ms"
    return f"FAILED ({p.get('error')})"


def run_status(args: argparse.Namespace, client: AgentClient) -> int:
    doc = client.get("/v1/health")
    if args.output == "json":
        print_json(doc)
        return 0 if doc.get("unreachable", 0) == 0 else 1
    if not doc.get("enabled"):
        print("health checking is off (agent started with --health-checking false)")
        return 0
    ep = doc["health-endpoint"]
    print(f"Health endpoint: {ep.get('ipv4') or '-'} {ep.get('ipv6') or ''} "
          f"(namespace {ep['netns']}), probing every {doc['interval-seconds']:g} s")
    print(f"Reachable: {doc['reachable']}, unreachable: {doc['unreachable']}")
    rows = [[t["name"], t["address"], _probe(t["probes"].get("icmp", {})),
             _probe(t["probes"].get("tcp", {})), t["last-probe"] or "-"]
            for t in doc["targets"]]
    print_table(("TARGET", "ADDRESS", "ICMP", "TCP", "LAST PROBE"), rows)
    return 0 if doc["unreachable"] == 0 else 1
