"""``GET /v1/monitor``: a live stream of datapath events, one JSON object a line."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context

from ..errors import InvalidInput
from ..monitor.hub import Filter

bp = Blueprint("monitor", __name__)

EVENT_TYPES = {"drop", "trace", "policy-verdict", "l7", "agent"}


@bp.get("/v1/monitor")
def monitor() -> Any:
    types = {t for v in request.args.getlist("type") for t in v.split(",") if t}
    unknown = types - EVENT_TYPES
    if unknown:
        raise InvalidInput(
            f"unknown event type {sorted(unknown)[0]!r}: use {', '.join(sorted(EVENT_TYPES))}",
            {"type": ",".join(sorted(unknown))},
        )
    identity = request.args.get("identity") or None
    if identity is not None and not (identity.isdigit() and 0 < int(identity) < 2**32):
        raise InvalidInput(f"invalid identity {identity!r}: a positive number",
                           {"identity": identity})
    flt = Filter(
        types=frozenset(types),
        from_endpoint=request.args.get("from") or None,
        to_endpoint=request.args.get("to") or None,
        related_to=request.args.get("related-to") or None,
        identity=int(identity) if identity else None,
    )
    agent = current_app.config["AGENT"]
    sub = agent.events.subscribe(flt=flt)
    datapath = agent.datapath
    # Read back from the kernel after subscribing: which datapath events are on now.
    emitting = datapath.trace_events_enabled() if datapath is not None else []

    def generate() -> Any:
        yield json.dumps({"type": "hello", "filters": flt.to_dict(),
                          "datapath-events": ["drop", *emitting]}) + "\n"
        for event in sub.events():
            # A heartbeat line lets the server notice a closed client connection.
            yield (json.dumps(event, default=str) if event is not None else "") + "\n"

    return Response(stream_with_context(generate()), mimetype="application/x-ndjson")
