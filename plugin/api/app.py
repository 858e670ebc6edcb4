"""The Flask application factory for the agent's REST API."""

from __future__ import annotations

from typing import Any

from flask import Flask

from . import health
from .errors import register_error_handlers


def create_app(agent: Any) -> Flask:
    app = Flask("cilium_py.api")
    app.config["AGENT"] = agent
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    for blueprint in extra_blueprints():
        app.register_blueprint(blueprint)
    return app


def extra_blueprints() -> list[Any]:
    """Blueprints of later subsystems; kept in one list so the app has one shape."""
    from . import bpf, endpoints, monitor, policy

    return [endpoints.bp, bpf.bp, policy.bp, monitor.bp]
