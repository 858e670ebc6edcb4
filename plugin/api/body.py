"""Request-body decoding shared by every handler.

Runtimes send bodies without a Content-Type, so the body is parsed as JSON whatever the
header says; a body that is not JSON is a 400 naming the parse error.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request
from marshmallow import Schema

from ..errors import InvalidInput


def json_body(allow_empty: bool = False) -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidInput("request body is empty; a JSON document is required", {"body": "empty"})
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}", {"body": str(exc)}) from exc


def load(schema: Schema, allow_empty: bool = False) -> Any:
    """Decode and validate the body; marshmallow's ValidationError becomes a 400."""
    return schema.load(json_body(allow_empty=allow_empty))
