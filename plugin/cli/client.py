"""The CLI's HTTP client for the agent's unix socket."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import requests
import requests_unixsocket

from ..config import DEFAULT_SOCKET


class CLIError(Exception):
    """Printed as one line on stderr; the CLI then exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_socket() -> str:
    return os.environ.get("CILIUM_PY_SOCK") or DEFAULT_SOCKET


class AgentClient:
    def __init__(self, socket_path: str | None = None, timeout: float = 30.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._session = requests_unixsocket.Session()
        self._base = "http+unix://" + quote(self.socket_path, safe="")

    def request(
        self, method: str, path: str, body: Any = None, params: dict | None = None,
        stream: bool = False, timeout: float | None = None,
    ) -> requests.Response:
        try:
            resp = self._session.request(
                method,
                self._base + path,
                json=body,
                params=params,
                timeout=timeout if timeout is not None else self.timeout,
                stream=stream,
            )
        except OSError as exc:  # requests' exceptions are OSErrors too
            raise CLIError(unreachable_message(self.socket_path, exc, self.timeout
                                               if timeout is None else timeout)) from exc
        return resp

    def call(self, method: str, path: str, body: Any = None, params: dict | None = None,
             ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """Perform a request and return the decoded JSON, or raise CLIError."""
        resp = self.request(method, path, body=body, params=params)
        if resp.status_code not in ok:
            raise CLIError(_error_text(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.call("GET", path, params=params)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: requests wraps urllib3's, which wraps the socket's."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def unreachable_message(socket_path: str, exc: BaseException, timeout: Any) -> str:
    """One line saying why the agent's socket gave no answer, each cause in its words.

    A timeout (the socket accepted, nothing answered) and a permission problem are not
    "the agent is not running", and saying so would send the user the wrong way.
    """
    if isinstance(exc, requests.Timeout) or isinstance(_root_cause(exc), TimeoutError):
        # requests takes a number or a (connect, read) pair.
        limit = timeout[-1] if isinstance(timeout, tuple) else timeout
        return (f"the agent at {socket_path} accepted the connection but did not answer "
                f"within {limit:g}s (agent busy or hung?)")
    cause = _root_cause(exc)
    if isinstance(cause, PermissionError):
        return (f"permission denied on the agent socket {socket_path}: run as root "
                "(or as a user the socket's owner and mode let in)")
    if isinstance(cause, FileNotFoundError):
        return f"no agent socket at {socket_path}: is cilium-py-agent running?"
    return f"cannot reach the agent at {socket_path}: is cilium-py-agent running?"


def _error_text(resp: requests.Response) -> str:
    try:
        doc = resp.json()
        message = doc.get("error") or str(doc)
        fields = doc.get("fields") or {}
    except ValueError:
        message, fields = resp.text.strip() or resp.reason, {}
    text = f"agent answered {resp.status_code}: {message}"
    for key, value in fields.items():
        if key not in message:
            text += f"\n  {key}: {value}"
    return text
