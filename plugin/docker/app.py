"""What dockerd talks to: one POST "route" per libnetwork method.

Routing is a table from ``/<Interface>.<Method>`` to a handler taking the decoded body
and returning the reply document. Every failure leaves through :func:`_failure`, the
single place where an exception becomes ``{"Err": ...}``.

:class:`Dispatcher` is plain Python over bytes (verb, path, body in; status and
document out), with no web framework: dockerd calls the driver six times per
``docker run`` and waits for each answer, and Flask's request and response machinery
under gunicorn cost about 0.2 ms a call more than :mod:`.server` does with this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import CiliumPyError
from ..logs import get_logger
from .agent_api import AgentAPI
from .ipam import IpamDriver
from .network import NetworkDriver
from .ports import Publisher
from .protocol import decode_body, error_reply
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


def _failure(method: str, exc: Exception) -> tuple[int, dict[str, Any]]:
    """The driver's one error path (see :func:`.protocol.error_reply` for statuses)."""
    if isinstance(exc, CiliumPyError):
        doc, status = error_reply(exc)
        log.warning("call failed", extra={"fields": {
            "method": method, "status": status, "error": doc["Err"]}})
        return status, doc
    log.exception("unhandled error in driver", extra={"fields": {"method": method}})
    return 500, {"Err": f"internal error in the cilium-py driver: {type(exc).__name__}"}


class Dispatcher:
    """``(verb, path, body) -> (status, reply)`` for every libnetwork call."""

    def __init__(self, table: dict[str, Handler]) -> None:
        self.table = table

    def __call__(self, verb: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        method = path.lstrip("/")
        handler = self.table.get(path)
        if handler is None:
            # 404 tells dockerd "not implemented"; only an unknown method gets it.
            return 404, {"Err": f"unknown method {method!r}"}
        if verb != "POST":
            return 405, {"Err": f"{verb} is not allowed: libnetwork methods are POSTed"}
        started = time.perf_counter()
        try:
            request = decode_body(body)
            reply = handler(request)
        except Exception as exc:  # noqa: BLE001 - the one error path
            return _failure(method, exc)
        log.debug("call", extra={"fields": {
            "method": method, "ms": round((time.perf_counter() - started) * 1000, 1),
            "body": request, "reply": reply}})
        return 200, reply


def create_app(agent: AgentAPI, state: DriverState, ports: Publisher) -> Dispatcher:
    return Dispatcher(method_table(NetworkDriver(agent, state, ports), IpamDriver(agent, state)))
