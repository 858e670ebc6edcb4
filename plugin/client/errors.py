"""How a call to the agent fails, as types: the one mapping from transport and HTTP to them.

Every adapter used to read HTTP statuses and socket errors its own way. Here a failed
call becomes exactly one of three kinds, each carrying the facts an adapter needs to
word it in its own protocol (CLI line and exit code, libnetwork ``Err``, CNI code):

- :class:`AgentUnreachable`: no answer at all (socket missing, refused, forbidden, a
  hang, a connection closed mid-call);
- :class:`UnreadableAnswer`: an answer that is not HTTP or not the JSON it should be;
- :class:`AgentRefused`: the agent answered with an error status. Its subclasses are
  also the agent's own exceptions (:mod:`cilium_py.errors`), so the REST API's mapping
  from exception to status is undone here and a 404 is a :class:`~cilium_py.errors.NotFound`
  on both sides of the socket.

:func:`refusal` is the only place where a status and body choose the type.
"""

from __future__ import annotations

from ..errors import CiliumPyError, Conflict, InvalidInput, NotFound, PoolExhausted, Unavailable
from . import codec

TYPE_CHECKING = False  # the typing module costs start-up time in the CNI plugin
if TYPE_CHECKING:
    from typing import Any

# Longest piece of a non-JSON error body kept: a proxy's or crash page's start says
# enough, and the whole page would flood a one-line error.
_TEXT_LIMIT = 200


class AgentError(CiliumPyError):
    """A call to the agent failed; ``method`` and ``path`` say which call."""

    def __init__(self, message: str, socket_path: str, method: str, path: str,
                 fields: dict[str, str] | None = None) -> None:
        super().__init__(message, fields)
        self.socket_path = socket_path
        self.method = method
        self.path = path


# Why no answer came; adapters word each differently (a timeout is not "not running").
MISSING = "missing"  # no socket file
FORBIDDEN = "forbidden"  # the socket's mode keeps this user out
REFUSED = "refused"  # a socket file nobody listens on
BUSY = "busy"  # the listen backlog stayed full until the deadline
TIMEOUT = "timeout"  # connected, and no answer within the timeout
BROKEN = "broken"  # the connection failed mid-call
CLOSED = "closed"  # the agent closed the connection without an answer


def unreachable_kind(exc: OSError) -> str:
    """Which of the reasons above a connect() failure is."""
    if isinstance(exc, FileNotFoundError):
        return MISSING
    if isinstance(exc, PermissionError):
        return FORBIDDEN
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, BlockingIOError):
        return BUSY
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    return BROKEN


class AgentUnreachable(AgentError, Unavailable):
    """No answer: ``kind`` is one of the reasons above; ``cause`` the OS error, if any.

    ``connecting`` tells a failure to connect from one after the request was sent, which
    for a non-idempotent call means it may have been served.
    """

    def __init__(self, socket_path: str, method: str, path: str, kind: str,
                 cause: OSError | None = None, timeout: float = 0.0,
                 connecting: bool = False) -> None:
        if kind == TIMEOUT:
            message = f"the agent at {socket_path} did not answer in time"
        else:
            why = (f"{type(cause).__name__}: {cause}" if cause is not None
                   else "connection closed without an answer")
            message = (f"cannot reach the agent at {socket_path}: is cilium-py-agent "
                       f"running? ({why})")
        super().__init__(message, socket_path, method, path)
        self.kind = kind
        self.cause = cause
        self.timeout = timeout
        self.connecting = connecting


class UnreadableAnswer(AgentError):
    """The answer is not HTTP, too large, or not JSON where JSON was due; ``detail`` says how."""

    def __init__(self, message: str, socket_path: str, method: str, path: str,
                 detail: str = "", status: int | None = None) -> None:
        super().__init__(message, socket_path, method, path)
        self.detail = detail
        self.http_status = status


class AgentRefused(AgentError):
    """The agent answered an error status: ``status``, its ``reason`` text and ``fields``.

    ``message`` is ``"agent: <reason>"``, the form that says who refused when it is shown
    as is; ``body`` is the decoded answer (``None`` when empty or not JSON).
    """

    def __init__(self, status: int, reason: str, fields: dict[str, str], body: Any,
                 socket_path: str, method: str, path: str) -> None:
        super().__init__(f"agent: {reason}", socket_path, method, path, fields)
        self.status = status
        self.reason = reason
        self.body = body


class RefusedInvalidInput(AgentRefused, InvalidInput):
    """400."""


class RefusedNotFound(AgentRefused, NotFound):
    """404."""


class RefusedConflict(AgentRefused, Conflict):
    """409 for any collision but an exhausted pool."""


class RefusedPoolExhausted(AgentRefused, PoolExhausted):
    """409 because the pool is exhausted: unlike other conflicts, it clears with time."""


class RefusedUnavailable(AgentRefused, Unavailable):
    """503 (a subsystem is not ready), or 502/504 from something in front of the agent."""


def _error_document(raw: bytes) -> tuple[Any, str]:
    """(decoded body or None, the reason text it gives)."""
    if not raw.strip():
        return None, ""
    try:
        doc = codec.loads(raw)
    except ValueError:
        return None, raw[:_TEXT_LIMIT].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and doc.get("error"):
        return doc, str(doc["error"])
    return doc, raw[:_TEXT_LIMIT].decode("utf-8", "replace").strip()


def refusal(status: int, raw: bytes, socket_path: str = "", method: str = "",
            path: str = "") -> AgentRefused:
    """The one mapping from an error answer (status + ``{"error", "fields"}``) to a type.

    The pool-exhausted case is told apart by the body's ``code`` when there is one, else
    by the wording the agent's allocator uses.
    """
    doc, reason = _error_document(raw)
    reason = reason or f"HTTP {status}"
    raw_fields = doc.get("fields") if isinstance(doc, dict) else None
    fields = ({str(k): str(v) for k, v in raw_fields.items()}
              if isinstance(raw_fields, dict) else {})
    cls: type[AgentRefused]
    if status == 400:
        cls = RefusedInvalidInput
    elif status == 404:
        cls = RefusedNotFound
    elif status == 409:
        exhausted = (isinstance(doc, dict) and doc.get("code") == PoolExhausted.code) \
            or "exhausted" in reason.lower()
        cls = RefusedPoolExhausted if exhausted else RefusedConflict
    elif status in (502, 503, 504):
        cls = RefusedUnavailable
    else:
        cls = AgentRefused
    return cls(status, reason, fields, doc, socket_path, method, path)
