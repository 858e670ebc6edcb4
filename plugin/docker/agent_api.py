"""The agent's REST API as the driver uses it, failing with the agent's own exceptions.

The driver never looks at HTTP statuses: a 409 from the agent arrives here as
:class:`~cilium_py.errors.Conflict`, an unreachable agent as
:class:`~cilium_py.errors.Unavailable`, and :mod:`.protocol` turns any of them into
libnetwork's ``{"Err": ...}`` in one place. Handlers are written against the
:class:`AgentAPI` protocol so unit tests can hand them a fake.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from ..cli.client import AgentClient, CLIError
from ..errors import CiliumPyError, Conflict, InvalidInput, NotFound, Unavailable

_BY_STATUS: dict[int, type[CiliumPyError]] = {
    400: InvalidInput,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}


class AgentAPI(Protocol):
    """What the driver needs from the agent; one method per API route it calls."""

    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def get_endpoint(self, ep_id: str) -> dict[str, Any]: ...
    def list_endpoints(self) -> list[dict[str, Any]]: ...
    def delete_endpoint(self, ep_id: str) -> None: ...
    def set_labels(self, ep_id: str, labels: list[str]) -> dict[str, Any]: ...
    def ipam_status(self) -> dict[str, Any]: ...
    def reserve(self, family: int, owner: str, address: str | None = None) -> dict[str, Any]: ...
    def release(self, address: str) -> None: ...


def _error_from(status: int, doc: Any, text: str) -> CiliumPyError:
    message = text.strip() or f"HTTP {status}"
    fields: dict[str, str] = {}
    if isinstance(doc, dict):
        message = str(doc.get("error") or message)
        raw = doc.get("fields")
        if isinstance(raw, dict):
            fields = {str(k): str(v) for k, v in raw.items()}
    cls = _BY_STATUS.get(status, CiliumPyError)
    return cls(f"agent: {message}", fields)


class HTTPAgentAPI:
    """:class:`AgentAPI` over the agent's unix socket (the CLI's transport)."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self._client = AgentClient(socket_path, timeout=timeout)

    @property
    def socket_path(self) -> str:
        return self._client.socket_path

    def _call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,),
              gone_ok: bool = False) -> Any:
        try:
            resp = self._client.request(method, path, body=body)
        except CLIError as exc:
            raise Unavailable(str(exc)) from exc
        if gone_ok and resp.status_code == 404:
            return None
        if resp.status_code not in ok:
            try:
                doc = resp.json()
            except ValueError:
                doc = None
            raise _error_from(resp.status_code, doc, resp.text)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/v1/endpoint/{quote(ep_id, safe='')}", body, ok=(200, 201))

    def get_endpoint(self, ep_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/endpoint/{quote(ep_id, safe='')}")

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/endpoint") or []

    def delete_endpoint(self, ep_id: str) -> None:
        """Idempotent: an endpoint that is already gone is what the caller wanted."""
        self._call("DELETE", f"/v1/endpoint/{quote(ep_id, safe='')}", ok=(200, 204),
                   gone_ok=True)

    def set_labels(self, ep_id: str, labels: list[str]) -> dict[str, Any]:
        """Replace the endpoint's labels (the label watcher's ``set_labels``)."""
        return self._call("PATCH", f"/v1/endpoint/{quote(ep_id, safe='')}/labels",
                          {"labels": labels})

    def ipam_status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/ipam")

    def reserve(self, family: int, owner: str, address: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"family": family, "owner": owner}
        if address:
            body["address"] = address
        return self._call("POST", "/v1/ipam/reservation", body, ok=(200, 201))

    def release(self, address: str) -> None:
        self._call("DELETE", f"/v1/ipam/reservation/{quote(address, safe='')}",
                   ok=(200, 204), gone_ok=True)
