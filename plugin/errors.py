"""The agent's one exception hierarchy.

Every failure the agent reports to a caller is one of these. Each adapter maps them to
its protocol's error form in exactly one place: the REST API to ``{"error", "fields"}``
with ``status``; the Docker driver to ``{"Err": ...}``; the CNI plugin to a CNI error code.
"""

from __future__ import annotations


class CiliumPyError(Exception):
    """Base class; ``status`` is the HTTP status the REST API answers with."""

    status = 500
    code = "internal"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class InvalidInput(CiliumPyError):
    """The request is malformed or names something impossible."""

    status = 400
    code = "invalid-input"


class NotFound(CiliumPyError):
    status = 404
    code = "not-found"


class Conflict(CiliumPyError):
    """The request collides with existing state (an address in use, a name taken)."""

    status = 409
    code = "conflict"


class PoolExhausted(CiliumPyError):
    """No address is left in the pool; retrying will not help until one is released."""

    status = 409
    code = "pool-exhausted"


class Unavailable(CiliumPyError):
    """A subsystem the request needs is not ready; retrying later may succeed."""

    status = 503
    code = "unavailable"
