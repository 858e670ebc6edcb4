"""Routes for policy, identities and the policy trace."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from marshmallow import Schema, fields

from ..errors import InvalidInput, NotFound
from .body import json_body, load

bp = Blueprint("policy", __name__)


def _agent() -> Any:
    return current_app.config["AGENT"]


def _labels_arg() -> list[str]:
    raw = request.args.getlist("labels")
    return [part for item in raw for part in item.split(",") if part]


@bp.put("/v1/policy")
def put_policy() -> Any:
    revision = _agent().policy.import_rules(json_body())
    return jsonify({"revision": revision})


@bp.get("/v1/policy")
def get_policy() -> Any:
    return jsonify(_agent().policy.get(_labels_arg()))


class PolicyDeleteSchema(Schema):
    """Body of ``DELETE /v1/policy`` (the labels can also be query parameters)."""

    labels = fields.List(fields.String(), required=True)

    error_messages = {"type": 'the body must be a JSON object {"labels": ["key=value", ...]}'}


@bp.delete("/v1/policy")
def delete_policy() -> Any:
    labels = _labels_arg()
    if not labels and request.get_data(cache=True).strip():
        labels = load(PolicyDeleteSchema())["labels"]
    deleted, revision = _agent().policy.delete(labels)
    return jsonify({"deleted": deleted, "revision": revision})


@bp.get("/v1/policy/resolve")
def resolve() -> Any:
    src = _labels_from("source")
    dst = _labels_from("destination")
    return jsonify(_agent().policy.trace(src, dst, request.args.get("dport"), _http_request(),
                                         _kafka_request()))


def _kafka_request() -> Any:
    """``kafka-api-key`` (name or number), ``kafka-api-version``, ``kafka-client-id``,
    ``kafka-topic`` (repeated): the request to judge against Kafka rules, or None."""
    from ..policy.kafka import API_KEYS, API_NAMES, KafkaRequestInfo

    args = request.args
    names = ("kafka-api-key", "kafka-api-version", "kafka-client-id", "kafka-topic")
    if not any(k in args for k in names):
        return None
    key_text = args.get("kafka-api-key", "")
    if key_text.isdigit() and int(key_text) in API_NAMES:
        key = int(key_text)
    elif key_text.lower() in API_KEYS:
        key = API_KEYS[key_text.lower()]
    else:
        raise InvalidInput(f"kafka-api-key: unknown Kafka API key {key_text!r}",
                           {"kafka-api-key": "a Kafka API name (produce, fetch, ...) or number"})
    version_text = args.get("kafka-api-version", "0")
    if not version_text.isdigit() or int(version_text) > 32767:
        raise InvalidInput(f"kafka-api-version: {version_text!r} is not a version",
                           {"kafka-api-version": "a number from 0 to 32767"})
    return KafkaRequestInfo(key, int(version_text), args.get("kafka-client-id"),
                            tuple(args.getlist("kafka-topic")))


def _http_request() -> Any:
    """``http-method``, ``http-path``, ``http-host``, ``http-header`` (repeated): the
    request to judge against HTTP rules; None when none is given."""
    from ..policy.l7 import HTTPRequest

    args = request.args
    if not any(k in args for k in ("http-method", "http-path", "http-host", "http-header")):
        return None
    return HTTPRequest(method=args.get("http-method", "GET"), path=args.get("http-path", "/"),
                       host=args.get("http-host", ""),
                       headers=HTTPRequest.parse_headers(args.getlist("http-header")))


def _labels_from(name: str) -> list[str]:
    values = [p for v in request.args.getlist(name) for p in v.split(",") if p]
    if not values:
        raise InvalidInput(f"query parameter {name} (labels) is required", {name: "missing"})
    return values


@bp.get("/v1/policy/wait/<int:revision>")
def wait(revision: int) -> Any:
    text = request.args.get("timeout", "30")
    try:
        timeout = float(text)
    except ValueError:
        timeout = math.nan
    # Only finite, non-negative seconds: nan would never compare past a deadline.
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidInput(f"invalid timeout {text!r}: seconds, a finite number >= 0",
                           {"timeout": text})
    timeout = min(timeout, 300.0)
    ok = _agent().policy.wait(revision, timeout)
    resp = jsonify({"revision": revision, "reached": ok})
    resp.status_code = 200 if ok else 504
    return resp


@bp.get("/v1/endpoint/<ep_id>/policy")
def endpoint_policy(ep_id: str) -> Any:
    agent = _agent()
    ep = agent.endpoints.get(ep_id)
    resolved = agent.policy.resolved.get(ep.id) or agent.policy.resolve(ep)
    doc = resolved.to_dict()
    doc["endpoint"] = ep.id
    doc["identity"] = ep.identity
    if agent.datapath is not None:
        doc["map"] = agent.datapath.policy_entries(ep)
    return jsonify(doc)


@bp.get("/v1/identity")
def identities() -> Any:
    items = _agent().identities.all()
    return jsonify([{"id": k, "labels": v.strings()} for k, v in sorted(items.items())])


@bp.get("/v1/identity/<int:number>")
def identity(number: int) -> Any:
    labels = _agent().identities.get(number)
    if labels is None:
        raise NotFound(f"identity {number} not found", {"id": str(number)})
    return jsonify({"id": number, "labels": labels.strings(),
                    "users": _agent().identities.users(number)})
