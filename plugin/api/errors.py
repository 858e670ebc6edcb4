"""The REST API's one error path: every failure becomes ``{"error", "fields"}``.

Clients (the CLI, the Docker driver, the CNI plugin) rely on never seeing an HTML page
or a stack trace: unexpected exceptions are logged here and answered as a plain 500.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from ..errors import CiliumPyError
from ..logs import get_logger

log = get_logger("api")


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, str]:
    """Turn marshmallow's nested message dict into ``{"a.b.0.c": "message"}``."""
    out: dict[str, str] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                path = prefix or "body"
            out.update(flatten_messages(value, path))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "body"] = " ".join(messages)
    elif isinstance(messages, list):
        for i, value in enumerate(messages):
            out.update(flatten_messages(value, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix or "body"] = str(messages)
    return out


def error_response(status: int, message: str, fields: dict[str, str] | None = None) -> Any:
    resp = jsonify({"error": message, "fields": fields or {}})
    resp.status_code = status
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CiliumPyError)
    def _agent_error(exc: CiliumPyError) -> Any:
        return error_response(exc.status, exc.message, exc.fields)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Any:
        fields = flatten_messages(exc.messages)
        summary = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
        return error_response(400, f"invalid request body: {summary}", fields)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        message = exc.description or exc.name
        if exc.code == 404:
            message = "no such API route; see GET /v1/openapi.json"
        if exc.code == 413:
            from .body import MAX_BODY_BYTES

            message = (f"request body too large: the limit is {MAX_BODY_BYTES} bytes "
                       f"({MAX_BODY_BYTES // (1024 * 1024)} MiB)")
            return error_response(413, message, {"body": f"over {MAX_BODY_BYTES} bytes"})
        return error_response(exc.code or 500, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error in API handler")
        return error_response(500, f"internal error: {type(exc).__name__}")
