"""``cilium-py policy import|get|delete|trace|wait``."""

from __future__ import annotations

import argparse
import json
import sys

from .client import AgentClient, CLIError
from .output import print_json


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("policy", help="manage security policy")
    psub = p.add_subparsers(dest="policy_cmd", metavar="SUBCOMMAND")
    psub.required = True
    imp = psub.add_parser("import", parents=[parent], help="import rules from FILE or -")
    imp.add_argument("file")
    imp.set_defaults(func=run_import)
    get = psub.add_parser("get", parents=[parent], help="show rules (optionally by labels)")
    get.add_argument("labels", nargs="*")
    get.set_defaults(func=run_get)
    delete = psub.add_parser("delete", parents=[parent], help="delete rules by labels, or all")
    delete.add_argument("labels", nargs="*")
    delete.add_argument("--all", action="store_true", help="delete every rule")
    delete.set_defaults(func=run_delete)
    trace = psub.add_parser("trace", parents=[parent], help="explain a verdict")
    trace.add_argument("-s", "--src", required=True, action="append", metavar="LABELS")
    trace.add_argument("-d", "--dst", required=True, action="append", metavar="LABELS")
    trace.add_argument("--dport", metavar="PORT/PROTO")
    trace.add_argument("--http-method", metavar="METHOD", help="judge this HTTP request too")
    trace.add_argument("--http-path", metavar="PATH")
    trace.add_argument("--http-host", metavar="HOST")
    trace.add_argument("--http-header", action="append", default=[], metavar="'NAME: VALUE'")
    trace.add_argument("--kafka-api-key", metavar="NAME",
                       help="judge this Kafka request too (produce, fetch, metadata, ...)")
    trace.add_argument("--kafka-api-version", metavar="N")
    trace.add_argument("--kafka-client-id", metavar="ID")
    trace.add_argument("--kafka-topic", action="append", default=[], metavar="TOPIC")
    trace.set_defaults(func=run_trace)
    wait = psub.add_parser("wait", parents=[parent], help="wait until all endpoints run REVISION")
    wait.add_argument("revision", type=int)
    wait.add_argument("--timeout", type=float, default=60.0)
    wait.set_defaults(func=run_wait)


def run_import(args: argparse.Namespace, client: AgentClient) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{args.file} is not valid JSON: {exc}") from exc
    result = client.call("PUT", "/v1/policy", body=doc)
    if args.output == "json":
        print_json(result)
    else:
        print(f"Revision: {result['revision']}")
    return 0


def run_get(args: argparse.Namespace, client: AgentClient) -> int:
    params = {"labels": ",".join(args.labels)} if args.labels else None
    doc = client.get("/v1/policy", params=params)
    if args.output == "json":
        print_json(doc)
    else:
        print(json.dumps(doc["policy"], indent=2))
        print(f"Revision: {doc['revision']}")
        for note in doc.get("notes", []):
            print(f"Note: {note}")
    return 0


def run_delete(args: argparse.Namespace, client: AgentClient) -> int:
    if not args.labels and not args.all:
        raise CLIError("give the labels of the rules to delete, or --all", exit_code=2)
    params = {"labels": ",".join(args.labels)} if args.labels else None
    doc = client.call("DELETE", "/v1/policy", params=params)
    if args.output == "json":
        print_json(doc)
    else:
        print(f"Deleted {doc['deleted']} rule(s); revision: {doc['revision']}")
    return 0


def run_trace(args: argparse.Namespace, client: AgentClient) -> int:
    params: dict[str, str] = {"source": ",".join(args.src), "destination": ",".join(args.dst)}
    if args.dport:
        params["dport"] = args.dport
    for name in ("http_method", "http_path", "http_host", "kafka_api_key",
                 "kafka_api_version", "kafka_client_id"):
        if getattr(args, name):
            params[name.replace("_", "-")] = getattr(args, name)
    query: dict[str, object] = dict(params)
    if args.http_header:
        query["http-header"] = args.http_header
    if args.kafka_topic:
        query["kafka-topic"] = args.kafka_topic
    if "kafka-api-key" not in query and (args.kafka_topic or args.kafka_api_version
                                         or args.kafka_client_id):
        raise CLIError("a Kafka request needs --kafka-api-key", exit_code=2)
    doc = client.get("/v1/policy/resolve", params=query)
    if args.output == "json":
        print_json(doc)
    else:
        print(doc["text"].rstrip())
    return 0


def run_wait(args: argparse.Namespace, client: AgentClient) -> int:
    path = f"/v1/policy/wait/{args.revision}"
    resp = client.request("GET", path, params={"timeout": str(args.timeout)},
                          timeout=args.timeout + 10)
    doc = client.answer(resp, "GET", path, ok=(200, 504))  # 504: not reached in time
    if args.output == "json":
        print_json(doc)
    elif doc.get("reached"):
        print(f"All endpoints run policy revision {args.revision}")
    if resp.status != 200:
        raise CLIError(f"policy revision {args.revision} not reached in {args.timeout:g}s")
    return 0
