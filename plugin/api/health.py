"""Routes about the agent itself: health, configuration and the API document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from .schemas import ConfigSchema, HealthSchema, dump_checked

bp = Blueprint("health", __name__)


def _agent() -> Any:
    return current_app.config["AGENT"]


@bp.get("/v1/healthz")
def healthz() -> Any:
    doc = dump_checked(HealthSchema(), _agent().health())
    resp = jsonify(doc)
    resp.status_code = 200 if doc["status"] != "failure" else 503
    return resp


@bp.get("/v1/health")
def connectivity() -> Any:
    """The connectivity monitor's last probe of every target (plugin/health/)."""
    monitor = getattr(_agent(), "health_monitor", None)
    if monitor is None:
        return jsonify({"enabled": False, "targets": []})
    return jsonify({"enabled": True, **monitor.status()})


@bp.get("/v1/config")
def config() -> Any:
    return jsonify(dump_checked(ConfigSchema(), _agent().config))


@bp.get("/v1/openapi.json")
def openapi() -> Any:
    """The OpenAPI document, generated from this app's routes and schemas (once)."""
    from .openapi import build_document  # apispec is needed only when someone asks

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    doc = app.config.get("CPY_OPENAPI")
    if doc is None:
        doc = app.config["CPY_OPENAPI"] = build_document(app)
    return jsonify(doc)
