"""``cilium-py service update|list|get|delete``: services with virtual addresses.

The shape is Cilium 1.0's: ``service update --id 1 --frontend 10.96.0.10:80
--backends 10.200.0.5:8080,10.200.0.6:8080``. IPv6 addresses are written in
brackets: ``[fd10:96::10]:80``. Weights follow the backend: ``ADDR:PORT/WEIGHT``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .client import AgentClient, CLIError
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("service", help="load-balanced services (virtual addresses)")
    ssub = p.add_subparsers(dest="service_cmd", metavar="SUBCOMMAND")
    ssub.required = True
    upd = ssub.add_parser("update", parents=[parent], help="create or replace a service")
    upd.add_argument("--id", type=int, required=True, help="service id (1-65535)")
    upd.add_argument("--frontend", required=True, metavar="IP:PORT",
                     help="the virtual address and port clients connect to")
    upd.add_argument("--backends", default="", metavar="IP:PORT[/WEIGHT],...",
                     help="where connections go (comma separated; weight defaults to 1)")
    upd.add_argument("--protocol", default="TCP", type=str.upper, choices=("TCP", "UDP"))
    upd.add_argument("--session-affinity", action="store_true",
                     help="keep each client address on one backend (ClientIP)")
    upd.add_argument("--session-affinity-timeout", type=int, default=None, metavar="SECONDS",
                     help="how long an idle client keeps its backend (default 10800)")
    upd.set_defaults(func=run_update)
    lst = ssub.add_parser("list", parents=[parent], help="all services")
    lst.set_defaults(func=run_list)
    get = ssub.add_parser("get", parents=[parent], help="one service")
    get.add_argument("id")
    get.set_defaults(func=run_get)
    dele = ssub.add_parser("delete", parents=[parent], help="delete a service")
    dele.add_argument("id", nargs="?")
    dele.add_argument("--all", action="store_true", help="delete every service")
    dele.set_defaults(func=run_delete)


def split_host_port(text: str, what: str) -> tuple[str, int]:
    """``1.2.3.4:80`` or ``[fd10::1]:80`` -> (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]:")
    else:
        host, sep, rest = text.rpartition(":")
        if ":" in host:
            raise CLIError(f"{what} {text!r}: write IPv6 addresses as [ADDRESS]:PORT", 2)
    if not sep or not host or not rest.isdigit():
        raise CLIError(f"{what} {text!r}: expected IP:PORT", 2)
    return host, int(rest)


def parse_backends(text: str) -> list[dict[str, Any]]:
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        addr, _, weight = item.partition("/")
        host, port = split_host_port(addr, "backend")
        backend: dict[str, Any] = {"ip": host, "port": port}
        if weight:
            if not weight.isdigit():
                raise CLIError(f"backend {item!r}: the weight must be a number", 2)
            backend["weight"] = int(weight)
        out.append(backend)
    return out


def service_body(args: argparse.Namespace) -> dict[str, Any]:
    host, port = split_host_port(args.frontend, "frontend")
    options: dict[str, Any] = {
        "session-affinity": "ClientIP" if args.session_affinity else "None"}
    if args.session_affinity_timeout is not None:
        options["session-affinity-timeout"] = args.session_affinity_timeout
    return {"id": args.id,
            "frontend-address": {"ip": host, "port": port, "protocol": args.protocol},
            "backend-addresses": parse_backends(args.backends), "options": options}


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _rows(services: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for svc in services:
        fe = svc["frontend-address"]
        backends = svc["backend-addresses"] or [None]
        for i, be in enumerate(backends):
            rows.append((
                svc["id"] if i == 0 else "",
                f"{_addr(fe['ip'], fe['port'])}/{fe['protocol']}" if i == 0 else "",
                f"{i + 1} => {_addr(be['ip'], be['port'])} (weight {be['weight']})"
                if be else "(no backends)",
            ))
    return rows


def _print(services: list[dict[str, Any]], out_format: str) -> int:
    if out_format == "json":
        print_json(services)
        return 0
    print_table(("ID", "FRONTEND", "BACKEND"), _rows(services))
    return 0


def run_update(args: argparse.Namespace, client: AgentClient) -> int:
    svc = client.call("PUT", f"/v1/service/{args.id}", body=service_body(args))
    return _print([svc], args.output)


def run_list(args: argparse.Namespace, client: AgentClient) -> int:
    return _print(client.get("/v1/service"), args.output)


def run_get(args: argparse.Namespace, client: AgentClient) -> int:
    return _print([client.get(f"/v1/service/{args.id}")], args.output)


def run_delete(args: argparse.Namespace, client: AgentClient) -> int:
    if args.all == (args.id is not None):
        raise CLIError("name one service id, or --all", 2)
    ids = [s["id"] for s in client.get("/v1/service")] if args.all else [args.id]
    for svc_id in ids:
        client.call("DELETE", f"/v1/service/{svc_id}")
        if args.output != "json":
            print(f"service {svc_id} deleted")
    if args.output == "json":
        print_json({"deleted": ids})
    return 0
