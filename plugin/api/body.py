"""Request-body decoding shared by every handler.

Runtimes send bodies without a Content-Type, so the body is parsed as JSON whatever the
header says; a body that is not JSON is a 400 naming the parse error. JSON is UTF-8
(RFC 8259): other encodings are refused rather than guessed. Documents nested deeper
than any request of ours needs, and numbers longer than any field takes, are refused
with a 400 instead of a parser error.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request
from marshmallow import Schema

from ..errors import InvalidInput

#: Bodies larger than this are refused (413); the largest real documents are policies
#: of many thousand rules, a few MB at most.
MAX_BODY_BYTES = 8 * 1024 * 1024
def json_body(allow_empty: bool = False) -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidInput("request body is empty; a JSON document is required", {"body": "empty"})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not UTF-8: {exc}", {"body": "not UTF-8"}) from exc
    if text.startswith("\ufeff"):
        raise InvalidInput("request body starts with a byte order mark; send plain UTF-8",
                           {"body": "byte order mark"})
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise InvalidInput("JSON nested too deeply", {"body": "nested too deeply"}) from exc
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise InvalidInput(f"malformed JSON: {exc}", {"body": str(exc)}) from exc


def load(schema: Schema, allow_empty: bool = False) -> Any:
    """Decode and validate the body; marshmallow's ValidationError becomes a 400."""
    return schema.load(json_body(allow_empty=allow_empty))
