"""CNI error codes, and the one place where agent failures become CNI errors.

Runtimes act on the numeric code (kubelet retries on 11, a STATUS of 50 stops new
pods being scheduled), so every failure path ends as a :class:`CNIError` built here;
``main`` prints it once as the spec's ``{"cniVersion", "code", "msg", "details"}``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

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


def from_agent(status: int, body: Any, action: str) -> CNIError:
    """Map an agent error answer (``{"error", "fields"}`` with HTTP status) to CNI.

    ``action`` ("create endpoint", ...) prefixes the message so a runtime's event log
    says what was being done. A DELETE's 404 never reaches here: it means success.
    """
    doc = body if isinstance(body, dict) else {}
    message = str(doc.get("error") or f"HTTP {status}")
    fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
    details = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
    msg = f"{action}: {message}"
    if status == 400:
        envs = sorted({env for field, env in _FIELD_TO_ENV.items()
                       for key in fields if key == field or key.startswith(field + ".")})
        if envs:
            return CNIError(INVALID_ENV, f"{msg} (check {', '.join(envs)})", details)
        return CNIError(INVALID_NETWORK_CONFIG, msg, details)
    if status == 404:
        return CNIError(UNKNOWN_CONTAINER, msg, details)
    if status == 409:
        # An exhausted pool clears as other containers go away: the runtime's retry
        # is the right answer. Any other conflict needs an operator.
        if doc.get("code") == "pool-exhausted" or "exhausted" in message.lower():
            return CNIError(TRY_AGAIN_LATER, msg, details)
        return CNIError(CONFLICT, msg, details)
    if status in (502, 503, 504):
        return CNIError(TRY_AGAIN_LATER, msg, details)
    return CNIError(INTERNAL, msg, details or f"agent answered HTTP {status}")
