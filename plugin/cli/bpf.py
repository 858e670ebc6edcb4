"""``cilium-py bpf endpoint|ct|drops|lb list``, ``bpf ct flush``: the pinned maps as the
datapath sees them."""

from __future__ import annotations

import argparse

from .client import AgentClient
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bpf", help="inspect the BPF maps")
    bsub = p.add_subparsers(dest="bpf_map", metavar="MAP")
    bsub.required = True
    for name, func, helptext in (
        ("endpoint", run_endpoints, "local endpoint map"),
        ("ct", run_ct, "connection tracking table"),
        ("drops", run_drops, "drop counters per reason"),
        ("ipcache", run_ipcache, "address/prefix to identity map"),
        ("metrics", run_metrics, "forwarding counters per path"),
        ("tunnel", run_tunnel, "overlay map: remote endpoint ranges to nodes"),
        ("lb", run_lb, "load-balancing maps: service frontends and their backend slots"),
    ):
        mp = bsub.add_parser(name, help=helptext)
        msub = mp.add_subparsers(dest="bpf_cmd", metavar="list")
        msub.required = True
        lst = msub.add_parser("list", parents=[parent], help=f"list the {helptext}")
        lst.set_defaults(func=func)
        if name == "ct":
            msub.metavar = "list|flush"
            flush = msub.add_parser(
                "flush", parents=[parent],
                help="delete every conntrack entry (cuts established TCP connections)")
            flush.set_defaults(func=run_ct_flush)
    pol = bsub.add_parser("policy", help="policy map entries of an endpoint")
    psub = pol.add_subparsers(dest="bpf_cmd", metavar="get")
    psub.required = True
    pget = psub.add_parser("get", parents=[parent], help="the endpoint's policy map entries")
    pget.add_argument("endpoint")
    pget.set_defaults(func=run_policy)


def _table(rows: list[dict], out_format: str) -> int:
    if out_format == "json":
        print_json(rows)
        return 0
    if not rows:
        print("(empty)")
        return 0
    headers = list(rows[0].keys())
    print_table([h.upper() for h in headers], [[r.get(h) for h in headers] for r in rows])
    return 0


def run_endpoints(args: argparse.Namespace, client: AgentClient) -> int:
    return _table(client.get("/v1/bpf/endpoint"), args.output)


def run_ct(args: argparse.Namespace, client: AgentClient) -> int:
    return _table(client.get("/v1/bpf/ct"), args.output)


def run_ct_flush(args: argparse.Namespace, client: AgentClient) -> int:
    result = client.call("DELETE", "/v1/bpf/ct")
    if args.output == "json":
        print_json(result)
    else:
        print(f"Deleted {result['deleted']} conntrack entries")
    return 0


def run_ipcache(args: argparse.Namespace, client: AgentClient) -> int:
    return _table(client.get("/v1/bpf/ipcache"), args.output)


def run_metrics(args: argparse.Namespace, client: AgentClient) -> int:
    counters = client.get("/v1/bpf/metrics")
    if args.output == "json":
        print_json(counters)
        return 0
    print_table(("PATH", "PACKETS", "BYTES"),
                [(k, v.get("packets"), v.get("bytes")) for k, v in sorted(counters.items())])
    return 0


def run_tunnel(args: argparse.Namespace, client: AgentClient) -> int:
    return _table(client.get("/v1/bpf/tunnel"), args.output)


def run_lb(args: argparse.Namespace, client: AgentClient) -> int:
    rows = client.get("/v1/bpf/lb")
    if args.output == "json":
        print_json(rows)
        return 0
    table = []
    for row in rows:
        backends = row["backends"] or [None]
        for i, be in enumerate(backends):
            first = i == 0
            table.append((
                row["frontend"] if first else "", row["protocol"] if first else "",
                row["service"] if first else "", row["slots"] if first else "",
                f"{be['address']}:{be['port']}" if be and ":" not in str(be["address"])
                else (f"[{be['address']}]:{be['port']}" if be else "(none)"),
                be["slots"] if be else "", be["id"] if be else ""))
    print_table(("FRONTEND", "PROTO", "SERVICE", "SLOTS", "BACKEND", "BACKEND-SLOTS",
                 "BACKEND-ID"), table)
    return 0


def run_drops(args: argparse.Namespace, client: AgentClient) -> int:
    counters = client.get("/v1/bpf/drops")
    if args.output == "json":
        print_json(counters)
        return 0
    print_table(("REASON", "PACKETS"), sorted(counters.items()))
    return 0


def run_policy(args: argparse.Namespace, client: AgentClient) -> int:
    doc = client.get(f"/v1/endpoint/{args.endpoint}/policy")
    if args.output == "json":
        print_json(doc)
        return 0
    print(f"Endpoint {doc['endpoint']} (identity {doc['identity']})")
    for direction in ("ingress", "egress"):
        enforced = doc[direction].get("enforced")
        print(f"{direction}: {'enforcing' if enforced else 'not enforcing (allow all)'}")
    rows = doc.get("map") or []
    if rows:
        headers = list(rows[0].keys())
        print_table([h.upper() for h in headers], [[r.get(h) for h in headers] for r in rows])
    for port in doc.get("l7_enforced_at_l4", []):
        print(f"note: L7 rules on {port} are enforced at L4 only")
    return 0
