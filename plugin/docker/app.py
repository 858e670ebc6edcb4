"""The Flask app dockerd talks to: one POST route per libnetwork method.

Routing is a table from ``/<Interface>.<Method>`` to a handler taking the decoded body
and returning the reply document. Every failure leaves through :func:`_failure`, the
single place where an exception becomes ``{"Err": ...}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import CiliumPyError
from ..logs import get_logger
from .agent_api import AgentAPI
from .ipam import IpamDriver
from .isolation import Isolator
from .network import NetworkDriver
from .ports import Publisher
from .protocol import PLUGIN_CONTENT_TYPE, decode_body, error_reply
from .state import DriverState

log = get_logger("docker.app")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _activate(_: dict[str, Any]) -> dict[str, Any]:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}


def method_table(network: NetworkDriver, ipam: IpamDriver) -> dict[str, Handler]:
    """Every method dockerd may call, by URL path."""
    return {
        "/Plugin.Activate": _activate,
        "/NetworkDriver.GetCapabilities": network.capabilities,
        "/NetworkDriver.CreateNetwork": network.create_network,
        "/NetworkDriver.DeleteNetwork": network.delete_network,
        "/NetworkDriver.AllocateNetwork": network.allocate_network,
        "/NetworkDriver.FreeNetwork": network.free_network,
        "/NetworkDriver.CreateEndpoint": network.create_endpoint,
        "/NetworkDriver.EndpointOperInfo": network.endpoint_info,
        "/NetworkDriver.DeleteEndpoint": network.delete_endpoint,
        "/NetworkDriver.Join": network.join,
        "/NetworkDriver.Leave": network.leave,
        "/NetworkDriver.DiscoverNew": network.discover,
        "/NetworkDriver.DiscoverDelete": network.discover,
        "/NetworkDriver.ProgramExternalConnectivity": network.program_external,
        "/NetworkDriver.RevokeExternalConnectivity": network.revoke_external,
        "/IpamDriver.GetCapabilities": ipam.capabilities,
        "/IpamDriver.GetDefaultAddressSpaces": ipam.default_address_spaces,
        "/IpamDriver.RequestPool": ipam.request_pool,
        "/IpamDriver.ReleasePool": ipam.release_pool,
        "/IpamDriver.RequestAddress": ipam.request_address,
        "/IpamDriver.ReleaseAddress": ipam.release_address,
    }


def _reply(doc: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type=PLUGIN_CONTENT_TYPE)


def _failure(exc: Exception) -> Response:
    """The driver's one error path (see :func:`.protocol.error_reply` for statuses)."""
    if isinstance(exc, CiliumPyError):
        doc, status = error_reply(exc)
        log.warning("call failed", extra={"fields": {
            "method": request.path.lstrip("/"), "status": status, "error": doc["Err"]}})
        return _reply(doc, status)
    if isinstance(exc, HTTPException):
        if exc.code == 404:
            return _reply({"Err": f"unknown method {request.path.lstrip('/')!r}"}, 404)
        return _reply({"Err": exc.description or exc.name}, exc.code or 500)
    log.exception("unhandled error in driver", extra={"fields": {"method": request.path}})
    return _reply({"Err": f"internal error in the cilium-py driver: {type(exc).__name__}"}, 500)


def create_app(agent: AgentAPI, state: DriverState, ports: Publisher,
               isolation: Isolator) -> Flask:
    app = Flask("cilium_py.docker")
    table = method_table(NetworkDriver(agent, state, ports, isolation), IpamDriver(agent, state))
    app.config["METHODS"] = table

    def dispatch(path: str) -> Response:
        handler = table.get("/" + path)
        if handler is None:
            return _reply({"Err": f"unknown method {path!r}"}, 404)
        body = decode_body(request.get_data(cache=False))
        started = time.perf_counter()
        reply = handler(body)
        log.debug("call", extra={"fields": {
            "method": path, "ms": round((time.perf_counter() - started) * 1000, 1),
            "body": body, "reply": reply}})
        return _reply(reply)

    # dockerd only POSTs; any other verb is a 405 with an Err body, like every failure.
    app.add_url_rule("/<path:path>", "dispatch", dispatch, methods=["POST"])
    app.register_error_handler(Exception, _failure)
    return app
