"""The agent's REST API as the driver uses it, failing with the agent's own exceptions.

The driver never looks at HTTP statuses: the shared client (:mod:`cilium_py.client`)
raises a 409 from the agent as a :class:`~cilium_py.errors.Conflict`, an unreachable
agent as an :class:`~cilium_py.errors.Unavailable`, and :mod:`.protocol` turns any of
them into libnetwork's ``{"Err": ...}`` in one place. Handlers are written against the
:class:`AgentAPI` protocol so unit tests can hand them a fake.

The connection is kept alive per thread (``keep_alive=True``): every ``docker run``
waits on these calls, and connecting per call, or ``requests``' overhead, would add to
each one.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..client.agent import AgentClient


class AgentAPI(Protocol):
    """What the driver needs from the agent; one method per API route it calls."""

    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def get_endpoint(self, ep_id: str) -> dict[str, Any]: ...
    def list_endpoints(self) -> list[dict[str, Any]]: ...
    def delete_endpoint(self, ep_id: str) -> bool: ...
    def set_labels(self, ep_id: str, labels: list[str]) -> dict[str, Any]: ...
    def ipam_status(self) -> dict[str, Any]: ...
    def reserve(self, family: int, owner: str, address: str | None = None) -> dict[str, Any]: ...
    def release(self, address: str) -> None: ...


class HTTPAgentAPI(AgentClient):
    """:class:`AgentAPI` over the agent's unix socket, one kept-alive connection a thread."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        super().__init__(socket_path, timeout, keep_alive=True, user_agent="cilium-py-docker")
