"""libnetwork's vocabulary and the driver's one error path.

Everything dockerd-specific that is not behaviour lives here: option keys, the
content type, and :func:`error_reply`, the single place where the agent's exception
hierarchy becomes ``{"Err": ...}``.

Status codes matter to dockerd beyond "failed or not": its plugin client reads a 404
as "this driver does not implement the method" and then *silently skips* optional
calls such as ProgramExternalConnectivity. So a 404 is only ever answered for an
unknown method, never for "the agent has no such endpoint".
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import CiliumPyError, InvalidInput

DRIVER_NAME = "cilium-py"
PLUGIN_CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"

# Option keys dockerd puts in request bodies.
OPT_GENERIC = "com.docker.network.generic"
OPT_ENABLE_IPV6 = "com.docker.network.enable_ipv6"
OPT_INTERNAL = "com.docker.network.internal"
OPT_PORTMAP = "com.docker.network.portmap"
OPT_EXPOSED_PORTS = "com.docker.network.endpoint.exposedports"
OPT_REQUEST_ADDRESS_TYPE = "RequestAddressType"
GATEWAY_ADDRESS_TYPE = "com.docker.network.gateway"

LOCAL_ADDRESS_SPACE = "CiliumPyLocal"
GLOBAL_ADDRESS_SPACE = "CiliumPyGlobal"

# StaticRoutes' RouteType values (libnetwork types.NEXTHOP / types.CONNECTED).
ROUTE_NEXTHOP = 0
ROUTE_CONNECTED = 1

# IP protocol numbers dockerd uses in port bindings.
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


class DriverError(CiliumPyError):
    """A request the driver itself refuses (not the agent): answered as a 500 ``Err``."""


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a request body whatever its Content-Type; an empty body is ``{}``.

    dockerd posts argument-less calls (Plugin.Activate, GetCapabilities, ...) with a
    zero-byte body and never sets a JSON Content-Type, so Flask's ``get_json`` is no use.
    """
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"body must be a JSON object, not {type(doc).__name__}")
    return doc


def require_str(body: dict[str, Any], key: str) -> str:
    """A mandatory non-empty string field; its absence is a 400 naming the field."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key} is required and must be a non-empty string")
    return value


def error_status(exc: CiliumPyError) -> int:
    """HTTP status of a failure: 400 for a malformed call, 500 for anything else.

    Never 404 (see the module docstring); dockerd only needs "not 200" plus ``Err``.
    """
    return 400 if isinstance(exc, InvalidInput) and not exc.message.startswith("agent:") else 500


def error_reply(exc: CiliumPyError) -> tuple[dict[str, str], int]:
    """The one mapping from the agent's exception hierarchy to libnetwork's error form."""
    message = exc.message
    if exc.fields:
        details = "; ".join(f"{k}: {v}" for k, v in sorted(exc.fields.items()) if k not in message)
        if details:
            message = f"{message} ({details})"
    return {"Err": message}, error_status(exc)
