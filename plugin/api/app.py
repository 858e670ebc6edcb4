"""The Flask application factory for the agent's REST API."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request

from . import health
from .body import MAX_BODY_BYTES
from .errors import register_error_handlers


def create_app(agent: Any) -> Flask:
    app = Flask("cilium_py.api")
    app.config["AGENT"] = agent
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    for blueprint in extra_blueprints():
        app.register_blueprint(blueprint)
    _count_requests(app)
    return app


def _count_requests(app: Flask) -> None:
    """Every request into the API metrics, by route template (bounded label values)."""

    @app.before_request
    def _start() -> None:
        g.cpy_started = time.perf_counter()

    @app.after_request
    def _done(response: Response) -> Response:
        metrics = getattr(app.config["AGENT"], "metrics", None)
        started = g.get("cpy_started")
        if metrics is not None and started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.api_request(route, request.method, response.status_code,
                                time.perf_counter() - started)
        return response


def extra_blueprints() -> list[Any]:
    """Blueprints of later subsystems; kept in one list so the app has one shape."""
    from . import bpf, endpoints, monitor, policy, service

    return [endpoints.bp, bpf.bp, policy.bp, monitor.bp, service.bp]
