"""``cilium-py status``: is the agent reachable, and how is each subsystem."""

from __future__ import annotations

import argparse

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[parent], help="agent and subsystem health")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, client: AgentClient) -> int:
    doc = client.call("GET", "/v1/healthz", ok=(200, 503))
    if args.output == "json":
        print_json(doc)
    else:
        print(f"Agent:      reachable at {client.socket_path} (version {doc['version']})")
        print(f"Status:     {doc['status'].upper()}")
        rows = [
            (name, s["status"].upper(), s.get("message", ""))
            for name, s in doc["subsystems"].items()
        ]
        print_table(("SUBSYSTEM", "STATUS", "MESSAGE"), rows)
    return 0 if doc["status"] != "failure" else 1
