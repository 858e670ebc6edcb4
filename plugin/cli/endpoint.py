"""``cilium-py endpoint list|get|labels``."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("endpoint", help="list and inspect endpoints")
    esub = p.add_subparsers(dest="endpoint_cmd", metavar="SUBCOMMAND")
    esub.required = True
    lst = esub.add_parser("list", parents=[parent], help="all endpoints on this node")
    lst.set_defaults(func=run_list)
    get = esub.add_parser("get", parents=[parent], help="one endpoint")
    get.add_argument("id")
    get.set_defaults(func=run_get)
    lab = esub.add_parser("labels", parents=[parent], help="change an endpoint's labels")
    lab.add_argument("id")
    lab.add_argument("--add", action="append", default=[], metavar="LABEL")
    lab.add_argument("--delete", action="append", default=[], metavar="LABEL")
    lab.set_defaults(func=run_labels)


def run_list(args: argparse.Namespace, client: AgentClient) -> int:
    eps = client.get("/v1/endpoint")
    if args.output == "json":
        print_json(eps)
        return 0
    rows = [
        (
            ep["id"], ep.get("identity"), ",".join(ep.get("labels") or []) or "-",
            ep["addressing"].get("ipv4") or "-", ep["addressing"].get("ipv6") or "-",
            ep.get("host-interface"), ep.get("state", "").upper(),
        )
        for ep in eps
    ]
    print_table(("ENDPOINT", "IDENTITY", "LABELS", "IPV4", "IPV6", "HOST-IF", "STATE"), rows)
    # Why an endpoint is not ready (it denies all traffic meanwhile), one line each.
    for ep in eps:
        if ep.get("state-reason"):
            print(f"{ep['id']}: {ep['state'].upper()}: {ep['state-reason']}")
    return 0


def run_get(args: argparse.Namespace, client: AgentClient) -> int:
    ep = client.get(f"/v1/endpoint/{quote(args.id, safe='')}")
    if args.output == "json":
        print_json(ep)
        return 0
    width = max((len(key) for key in ep), default=0) + 2  # "key:" and at least one space
    for key, value in ep.items():
        print(f"{key + ':':<{width}}{value}")
    return 0


def run_labels(args: argparse.Namespace, client: AgentClient) -> int:
    ep = client.call("PATCH", f"/v1/endpoint/{quote(args.id, safe='')}/labels",
                     body={"add": args.add, "delete": args.delete})
    if args.output == "json":
        print_json(ep)
    else:
        print(f"endpoint {ep['id']}: identity {ep['identity']}, labels {', '.join(ep['labels'])}")
    return 0
