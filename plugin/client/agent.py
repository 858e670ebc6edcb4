"""The agent's REST API as its callers use it: JSON in, JSON out, typed errors.

One client for the CLI, the Docker driver and the CNI plugin. Each adapter words the
errors of :mod:`.errors` in its own protocol; none of them reads HTTP statuses or
socket errors itself. Only the standard library is imported, and little of it, since
the CNI plugin runs this in a fresh interpreter per exec.
"""

from __future__ import annotations

from . import codec
from .errors import UnreadableAnswer, refusal
from .transport import Response, Stream, UnixTransport
from .wire import quote, with_query

TYPE_CHECKING = False  # the typing module costs start-up time in the CNI plugin
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_TIMEOUT = 30.0


def endpoint_path(ep_id: str, *rest: str) -> str:
    """``/v1/endpoint/<id>[/...]`` with the id escaped (Docker ids are free-form)."""
    return "/".join(("/v1/endpoint", quote(ep_id), *rest))


class AgentClient:
    """Calls to one agent socket.

    ``keep_alive`` is for long-lived callers making many calls (a connection per
    thread); one-shot callers leave it off and need no threads at all.
    """

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT,
                 keep_alive: bool = False, user_agent: str = "cilium-py") -> None:
        self._transport = UnixTransport(socket_path, timeout, keep_alive, user_agent)

    @property
    def socket_path(self) -> str:
        return self._transport.socket_path

    @property
    def timeout(self) -> float:
        """Seconds to wait for a connection and then for each piece of the answer."""
        return self._transport.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._transport.timeout = value

    def close(self) -> None:
        self._transport.close()

    # -- generic calls -----------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                params: Mapping[str, object] | None = None,
                timeout: float | None = None) -> Response:
        """One request, any status; raises only when no readable answer came."""
        payload = None if body is None else codec.dumps(body).encode()
        return self._transport.request(method, with_query(path, params), payload, timeout)

    def answer(self, resp: Response, method: str, path: str,
               ok: tuple[int, ...] = (200, 201, 204), gone_ok: bool = False) -> Any:
        """The decoded body of an answer in ``ok``; any other status raises its refusal.

        ``gone_ok`` makes 404 an answer of ``None``: for deletes, already gone is done.
        """
        if gone_ok and resp.status == 404:
            return None
        if resp.status not in ok:
            raise refusal(resp.status, resp.content, self.socket_path, method, path)
        if resp.status == 204 or not resp.content.strip():
            return None
        try:
            return codec.loads(resp.content)
        except ValueError as exc:
            raise UnreadableAnswer(f"agent: answered {resp.status} with a body that is not "
                                   "JSON", self.socket_path, method, path, str(exc),
                                   resp.status) from None

    def call(self, method: str, path: str, body: Any = None,
             params: Mapping[str, object] | None = None, ok: tuple[int, ...] = (200, 201, 204),
             gone_ok: bool = False, timeout: float | None = None) -> Any:
        """:meth:`request`, then :meth:`answer`: the decoded body or a typed error."""
        resp = self.request(method, path, body, params, timeout)
        return self.answer(resp, method, path, ok, gone_ok)

    def get(self, path: str, params: Mapping[str, object] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def stream(self, method: str, path: str, params: Mapping[str, object] | None = None,
               timeout: float | None = None) -> Stream:
        """An answer read as it arrives; ``timeout`` bounds each wait for more of it."""
        return self._transport.stream(method, with_query(path, params), timeout)

    # -- the routes the adapters call ---------------------------------------------------
    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("PUT", endpoint_path(ep_id), body, ok=(200, 201))

    def get_endpoint(self, ep_id: str) -> dict[str, Any]:
        return self.call("GET", endpoint_path(ep_id), ok=(200,))

    def get_interface(self, ep_id: str) -> dict[str, Any]:
        """What the kernel shows of the endpoint's interface (for CNI CHECK)."""
        return self.call("GET", endpoint_path(ep_id, "interface"), ok=(200,))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/endpoint", ok=(200,)) or []

    def delete_endpoint(self, ep_id: str) -> bool:
        """Idempotent: False when the endpoint was already gone, which is what was wanted."""
        path = endpoint_path(ep_id)
        resp = self.request("DELETE", path)
        self.answer(resp, "DELETE", path, ok=(200, 202, 204), gone_ok=True)
        return resp.status != 404

    def set_labels(self, ep_id: str, labels: list[str]) -> dict[str, Any]:
        """Replace the endpoint's labels with the full list."""
        return self.call("PATCH", endpoint_path(ep_id, "labels"), {"labels": labels},
                         ok=(200,))

    def ipam_status(self) -> dict[str, Any]:
        return self.call("GET", "/v1/ipam", ok=(200,))

    def reserve(self, family: int, owner: str, address: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"family": family, "owner": owner}
        if address:
            body["address"] = address
        return self.call("POST", "/v1/ipam/reservation", body, ok=(200, 201))

    def release(self, address: str) -> None:
        self.call("DELETE", f"/v1/ipam/reservation/{quote(address)}", ok=(200, 204),
                  gone_ok=True)

    def health(self, timeout: float | None = None) -> Response:
        """``GET /v1/healthz`` as it came: a 503 still carries the subsystems' states."""
        return self.request("GET", "/v1/healthz", timeout=timeout)
