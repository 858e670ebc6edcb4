"""``cilium-py node list``: the nodes of the cluster as this agent sees them."""

from __future__ import annotations

import argparse

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("node", help="cluster nodes")
    nsub = p.add_subparsers(dest="node_cmd", metavar="list")
    nsub.required = True
    lst = nsub.add_parser("list", parents=[parent], help="list the cluster's nodes")
    lst.set_defaults(func=run_list)


def run_list(args: argparse.Namespace, client: AgentClient) -> int:
    doc = client.get("/v1/node")
    if args.output == "json":
        print_json(doc)
        return 0
    if doc.get("mode") == "single-node":
        print("single node (no cluster store): no other nodes")
        return 0
    me = doc.get("node")
    etcd = "reachable" if doc.get("connected") else f"UNREACHABLE: {doc.get('last-error')}"
    print(f"This node: {me} ({doc.get('mode')}), etcd {etcd}")
    rows = [[("* " if n["name"] == me else "  ") + n["name"], n["address"],
             n.get("ipv4-range") or "-", n.get("ipv6-range") or "-"] for n in doc["nodes"]]
    print_table(("NAME", "ADDRESS", "IPV4 RANGE", "IPV6 RANGE"), rows)
    return 0
