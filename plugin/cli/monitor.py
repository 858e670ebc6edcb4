"""``cilium-py monitor``: stream events as they happen, one line each.

The stream outlives the agent: when the connection drops (the agent restarts) the
command says so, reconnects as soon as the agent answers again and goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from ..client.errors import AgentError
from .client import AgentClient, CLIError

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}
TYPES = ("drop", "trace", "policy-verdict", "l7", "agent")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("monitor", parents=[parent], help="stream datapath, L7 and agent events")
    p.add_argument("--type", action="append", default=[],
                   help=f"event type ({', '.join(TYPES)}); repeat for several")
    p.add_argument("--from", dest="from_endpoint", metavar="ENDPOINT",
                   help="only events whose source is this endpoint")
    p.add_argument("--to", dest="to_endpoint", metavar="ENDPOINT",
                   help="only events whose destination is this endpoint")
    p.add_argument("--related-to", metavar="ENDPOINT",
                   help="only events about this endpoint (source, destination or owner)")
    p.add_argument("--identity", type=int, help="only events with this identity on either side")
    p.add_argument("-n", "--count", type=int, default=0, help="stop after N events")
    p.set_defaults(func=run)


def _when(ev: dict) -> str:
    t = ev.get("time")
    if not isinstance(t, int | float):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def _addr(addr: object, port: object) -> str:
    text = str(addr or "?")
    if ":" in text:
        text = f"[{text}]"
    return f"{text}:{port}" if port else text


def _flow(ev: dict) -> str:
    proto = PROTOCOLS.get(ev.get("protocol"), str(ev.get("protocol", "")))  # type: ignore[arg-type]
    flags = f" [{ev['tcp_flags']}]" if ev.get("tcp_flags") else ""
    return (f"{_addr(ev.get('src'), ev.get('sport'))} -> {_addr(ev.get('dst'), ev.get('dport'))}"
            f" {proto}{flags}")


def _ids(ev: dict) -> str:
    src = ev.get("src_identity", ev.get("source-identity"))
    dst = ev.get("dst_identity", ev.get("destination-identity"))
    names = (ev.get("source-endpoint"), ev.get("destination-endpoint"))
    src_text = f"{names[0]}({src})" if names[0] else f"identity {src}"
    dst_text = f"{names[1]}({dst})" if names[1] else f"identity {dst}"
    return f"{src_text} -> {dst_text}"


def _match(ev: dict) -> str:
    """The policy entry that decided a verdict: identity, port/protocol ("any" = wildcard)."""
    match = ev.get("match")
    if not isinstance(match, dict):
        return "match none" if "match" in ev else ""
    port = match.get("port")
    l4 = "any" if port == "any" and match.get("protocol") == "ANY" else (
        f"{port}/{match.get('protocol')}")
    return f"match identity={match.get('identity')} port={l4}"


def _kafka(data: dict) -> str:
    if data.get("message"):  # the proxy closed the connection
        return f"closed: {data.get('reason')}: {data.get('message')}"
    topics = ",".join(data.get("topics") or []) or "-"
    return (f"{data.get('api-key')} v{data.get('api-version')} client={data.get('client-id')}"
            f" topics={topics} error={data.get('error-code')}")


def format_event(ev: dict) -> str:
    """One line a packet or record: time, what, endpoints and identities, the flow."""
    kind = ev.get("type")
    when = _when(ev)
    if kind == "drop":
        return (f"{when} xx drop ({ev.get('reason_name')}) {ev.get('direction')} "
                f"endpoint {ev.get('endpoint', ev.get('endpoint_id'))} {_ids(ev)}: {_flow(ev)}")
    if kind == "trace":
        lb = ""
        if ev.get("frontend"):
            lb = f" (service {ev['frontend']} -> backend {ev.get('backend')})"
        prog = f" ({ev['program']})" if ev.get("program") else ""
        return (f"{when} -> {ev.get('observation', 'trace')}{prog} endpoint "
                f"{ev.get('endpoint', ev.get('endpoint_id'))} {_ids(ev)}: {_flow(ev)}{lb}")
    if kind == "policy-verdict":
        rule = f" rule {ev['rule']}" if ev.get("rule") else ""
        proxy = f" proxy-port {ev['proxy_port']}" if ev.get("proxy_port") else ""
        return (f"{when} policy-verdict {ev.get('verdict')} {ev.get('direction')} endpoint "
                f"{ev.get('endpoint', ev.get('endpoint_id'))} {_ids(ev)}: {_flow(ev)}"
                f" {_match(ev)}{proxy}{rule}")
    if kind == "l7":
        parser = ev.get("parser", "l7")
        data = ev.get(parser) or {}
        if parser == "http":
            what = (f"{data.get('method')} {data.get('host') or ''}{data.get('path')} "
                    f"-> {data.get('status')}")
        elif parser == "kafka":
            what = _kafka(data)
        else:
            what = " ".join(f"{k}={v}" for k, v in sorted(data.items()))
        return (f"{when} <> {parser} {ev.get('verdict')} {ev.get('direction')} {_ids(ev)}: "
                f"{_addr(ev.get('src'), ev.get('sport'))} -> "
                f"{_addr(ev.get('dst'), ev.get('dport'))} {what}")
    if kind == "agent":
        rest = " ".join(f"{k}={v}" for k, v in ev.items()
                        if k not in ("type", "time", "message"))
        return f"{when} agent {ev.get('message')} {rest}".rstrip()
    if kind == "lost":
        return f"{when} !! {ev.get('message')}"
    if kind == "drops-suppressed":
        return (f"{when} !! {ev.get('count')} drop events of endpoint "
                f"{ev.get('endpoint', ev.get('ifindex'))} suppressed (more than "
                f"{ev.get('limit_per_second')} a second; drop counters are exact)")
    return json.dumps(ev)


def _params(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.type:
        params["type"] = ",".join(args.type)
    for key, value in (("from", args.from_endpoint), ("to", args.to_endpoint),
                       ("related-to", args.related_to), ("identity", args.identity)):
        if value is not None:
            params[key] = str(value)
    return params


def _say(args: argparse.Namespace, message: str) -> None:
    if args.output == "json":
        print(json.dumps({"type": "monitor", "time": time.time(), "message": message}),
              flush=True)
    else:
        print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, client: AgentClient) -> int:
    params = _params(args)
    seen = 0
    connected_once = False
    while True:
        try:
            # Heartbeats arrive well within 30 s: a longer silence is a lost agent.
            resp = client.stream("GET", "/v1/monitor", params=params, timeout=30)
        except CLIError:
            if not connected_once:
                raise
            time.sleep(0.5)  # the agent is restarting: keep trying
            continue
        if resp.status != 200:
            try:
                text = resp.read().text.strip()
            except AgentError:
                text = ""
            finally:
                resp.close()
            raise CLIError(f"agent answered {resp.status}: {text}")
        if connected_once:
            _say(args, "reconnected to the agent")
        connected_once = True
        try:
            for line in resp.iter_lines():
                if not line:
                    continue  # heartbeat
                ev = json.loads(line)
                if ev.get("type") == "hello":
                    if args.output == "json":
                        # stdout carries events only; stderr says when the stream is live.
                        on = ", ".join(ev.get("datapath-events") or [])
                        print(f"Listening for events (datapath emits: {on or 'nothing'})",
                              file=sys.stderr, flush=True)
                    elif seen == 0:
                        print("Listening for events... Press Ctrl-C to quit", flush=True)
                    continue
                print(json.dumps(ev) if args.output == "json" else format_event(ev), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return 0
        except (AgentError, ValueError):
            pass
        finally:
            resp.close()
        _say(args, "connection to the agent lost; reconnecting...")
