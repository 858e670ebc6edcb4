"""``cilium-py identity list|get``."""

from __future__ import annotations

import argparse

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("identity", help="numeric identities of label sets")
    isub = p.add_subparsers(dest="identity_cmd", metavar="SUBCOMMAND")
    isub.required = True
    lst = isub.add_parser("list", parents=[parent], help="all identities")
    lst.set_defaults(func=run_list)
    get = isub.add_parser("get", parents=[parent], help="one identity")
    get.add_argument("id", type=int)
    get.set_defaults(func=run_get)


def run_list(args: argparse.Namespace, client: AgentClient) -> int:
    items = client.get("/v1/identity")
    if args.output == "json":
        print_json(items)
    else:
        print_table(("ID", "LABELS"), [(i["id"], " ".join(i["labels"])) for i in items])
    return 0


def run_get(args: argparse.Namespace, client: AgentClient) -> int:
    doc = client.get(f"/v1/identity/{args.id}")
    if args.output == "json":
        print_json(doc)
    else:
        print(f"ID:      {doc['id']}")
        print(f"Labels:  {' '.join(doc['labels'])}")
        print(f"Users:   {', '.join(doc.get('users') or []) or '-'}")
    return 0
