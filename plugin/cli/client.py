"""The CLI's use of the shared agent client: its failures as one line and an exit code.

The commands call :class:`AgentClient` (the shared :class:`cilium_py.client.agent.AgentClient`)
and only ever see :class:`CLIError`: :func:`cli_error` is the one place where the
client's typed failures become the CLI's words.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..client import agent, errors
from ..client.transport import Response, Stream
from ..config import DEFAULT_SOCKET


class CLIError(Exception):
    """Printed as one line on stderr; the CLI then exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_socket() -> str:
    return os.environ.get("CILIUM_PY_SOCK") or DEFAULT_SOCKET


def unreachable_message(exc: errors.AgentUnreachable) -> str:
    """One line saying why the agent's socket gave no answer, each cause in its words.

    A timeout (the socket accepted, nothing answered) and a permission problem are not
    "the agent is not running", and saying so would send the user the wrong way.
    """
    path = exc.socket_path
    if exc.kind == errors.TIMEOUT:
        return (f"the agent at {path} accepted the connection but did not answer "
                f"within {exc.timeout:g}s (agent busy or hung?)")
    if exc.kind == errors.FORBIDDEN:
        return (f"permission denied on the agent socket {path}: run as root "
                "(or as a user the socket's owner and mode let in)")
    if exc.kind == errors.MISSING:
        return f"no agent socket at {path}: is cilium-py-agent running?"
    return f"cannot reach the agent at {path}: is cilium-py-agent running?"


def refusal_message(exc: errors.AgentRefused) -> str:
    """``agent answered <status>: <reason>``, then each field the reason does not name."""
    text = f"agent answered {exc.status}: {exc.reason}"
    for key, value in exc.fields.items():
        if key not in exc.reason:
            text += f"\n  {key}: {value}"
    return text


def cli_error(exc: errors.AgentError) -> CLIError:
    """The one mapping from the client's failures to what the CLI prints."""
    if isinstance(exc, errors.AgentUnreachable):
        return CLIError(unreachable_message(exc))
    if isinstance(exc, errors.AgentRefused):
        return CLIError(refusal_message(exc))
    detail = f" ({exc.detail})" if isinstance(exc, errors.UnreadableAnswer) and exc.detail \
        else ""
    return CLIError(f"{exc.message}{detail}")


@contextmanager
def _as_cli_error() -> Iterator[None]:
    try:
        yield
    except errors.AgentError as exc:
        raise cli_error(exc) from exc


class AgentClient(agent.AgentClient):
    """The shared client, failing with :class:`CLIError` only."""

    def __init__(self, socket_path: str | None = None,
                 timeout: float = agent.DEFAULT_TIMEOUT) -> None:
        super().__init__(socket_path or default_socket(), timeout, user_agent="cilium-py-cli")

    def request(self, method: str, path: str, body: Any = None,
                params: Mapping[str, object] | None = None,
                timeout: float | None = None) -> Response:
        with _as_cli_error():
            return super().request(method, path, body, params, timeout)

    def answer(self, resp: Response, method: str, path: str,
               ok: tuple[int, ...] = (200, 201, 204), gone_ok: bool = False) -> Any:
        with _as_cli_error():
            return super().answer(resp, method, path, ok, gone_ok)

    def stream(self, method: str, path: str, params: Mapping[str, object] | None = None,
               timeout: float | None = None) -> Stream:
        with _as_cli_error():
            return super().stream(method, path, params, timeout)
