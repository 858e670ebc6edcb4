"""CNI error codes, and the one place where failed agent calls become CNI errors.

Runtimes act on the numeric code (kubelet retries on 11, a STATUS of 50 stops new
pods being scheduled), so every failure path ends as a :class:`CNIError` built here;
``main`` prints it once as the spec's ``{"cniVersion", "code", "msg", "details"}``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

    from ..client import errors as client_errors

# Well-known codes (CNI spec, "Error codes"); 0-99 are reserved for these.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
# STATUS only (1.1.0).
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51

# Plugin-specific codes (100+).
INTERNAL = 100  # a bug in the plugin or an agent 5xx: nothing the runtime can fix
CHECK_FAILED = 101  # CHECK found the container's network not as ADD left it
CONFLICT = 102  # the agent refused: the request collides with existing state


class CNIError(Exception):
    """A failure the runtime sees: ``code`` and ``msg`` are what the spec prints."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}


class AgentUnreachable(CNIError):
    """The agent's socket is missing, refuses, or hangs: worth retrying later."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(TRY_AGAIN_LATER, f"cilium-py agent not reachable at {socket_path}",
                         reason)
        self.socket_path = socket_path


# Agent request fields that came from CNI environment variables: a 400 about one of
# these is the runtime's invalid environment (code 4), not a bad config (code 7).
_FIELD_TO_ENV = {
    "netns": "CNI_NETNS",
    "interface-name": "CNI_IFNAME",
    "container-id": "CNI_CONTAINERID",
    "id": "CNI_CONTAINERID",
}


def _unreachable_details(exc: client_errors.AgentUnreachable) -> str:
    from ..client import errors as client_errors

    call = f"{exc.method} {exc.path}"
    if exc.connecting:
        return f"connect: {exc.cause}"
    if exc.kind == client_errors.TIMEOUT:
        return f"no answer to {call} in {exc.timeout}s"
    if exc.kind == client_errors.CLOSED:
        return f"{call}: connection closed without an answer"
    return f"{call}: {exc.cause}"


def from_agent(exc: client_errors.AgentError, action: str) -> CNIError:
    """The one mapping from the client's typed failures to CNI codes.

    ``action`` ("create endpoint", ...) prefixes the agent's refusals so a runtime's
    event log says what was being done. A DELETE's 404 never reaches here: the client
    reports it as success.
    """
    # Imported here, not at the top: VERSION imports this module and needs no client.
    from ..client import errors as client_errors

    if isinstance(exc, client_errors.AgentUnreachable):
        return AgentUnreachable(exc.socket_path, _unreachable_details(exc))
    if not isinstance(exc, client_errors.AgentRefused):
        detail = getattr(exc, "detail", "")
        return CNIError(INTERNAL, exc.message, detail)
    fields = exc.fields
    details = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
    msg = f"{action}: {exc.reason}"
    if isinstance(exc, client_errors.RefusedInvalidInput):
        envs = sorted({env for field, env in _FIELD_TO_ENV.items()
                       for key in fields if key == field or key.startswith(field + ".")})
        if envs:
            return CNIError(INVALID_ENV, f"{msg} (check {', '.join(envs)})", details)
        return CNIError(INVALID_NETWORK_CONFIG, msg, details)
    if isinstance(exc, client_errors.RefusedNotFound):
        return CNIError(UNKNOWN_CONTAINER, msg, details)
    # An exhausted pool clears as other containers go away, and a 503 (or a gateway's
    # 502/504) as the agent recovers: the runtime's retry is the right answer. Any
    # other conflict needs an operator.
    if isinstance(exc, client_errors.RefusedPoolExhausted | client_errors.RefusedUnavailable):
        return CNIError(TRY_AGAIN_LATER, msg, details)
    if isinstance(exc, client_errors.RefusedConflict):
        return CNIError(CONFLICT, msg, details)
    return CNIError(INTERNAL, msg, details or f"agent answered HTTP {exc.status}")


class calling:  # noqa: N801 - used as a statement: ``with calling("create endpoint x"):``
    """Turns a failed agent call inside the block into its CNI error.

    A class, not :func:`contextlib.contextmanager`: contextlib would be one more import
    on every exec.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        from ..client.errors import AgentError

        if isinstance(exc, AgentError):
            raise from_agent(exc, self.action) from None
        return False
