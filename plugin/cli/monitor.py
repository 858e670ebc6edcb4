"""``cilium-py monitor``: stream datapath events as they happen."""

from __future__ import annotations

import argparse
import json

from .client import AgentClient, CLIError


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("monitor", parents=[parent], help="stream datapath events")
    p.add_argument("--type", action="append", default=[], help="event type (drop, ...)")
    p.add_argument("--from", dest="from_endpoint", metavar="ENDPOINT",
                   help="only events of this endpoint")
    p.add_argument("-n", "--count", type=int, default=0, help="stop after N events")
    p.set_defaults(func=run)


def format_event(ev: dict) -> str:
    if ev.get("type") == "drop":
        ports = f" {ev.get('sport')}->{ev.get('dport')}" if ev.get("dport") else ""
        return (
            f"xx drop ({ev.get('reason_name')}) {ev.get('direction')} "
            f"endpoint {ev.get('endpoint', ev.get('endpoint_id'))} "
            f"identity {ev.get('src_identity')}->{ev.get('dst_identity')}: "
            f"{ev.get('src')} -> {ev.get('dst')} proto {ev.get('protocol')}{ports}"
        )
    return json.dumps(ev)


def run(args: argparse.Namespace, client: AgentClient) -> int:
    params: dict[str, str] = {}
    if args.type:
        params["type"] = ",".join(args.type)
    if args.from_endpoint:
        params["from"] = args.from_endpoint
    resp = client.request("GET", "/v1/monitor", params=params, stream=True, timeout=3600)
    if resp.status_code != 200:
        raise CLIError(f"agent answered {resp.status_code}: {resp.text.strip()}")
    seen = 0
    for line in resp.iter_lines():
        if not line:
            continue
        ev = json.loads(line)
        if ev.get("type") == "hello":
            if args.output != "json":
                print("Listening for events... Press Ctrl-C to quit", flush=True)
            continue
        print(json.dumps(ev) if args.output == "json" else format_event(ev), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            break
    return 0
