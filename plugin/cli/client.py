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
        except (requests.ConnectionError, FileNotFoundError, OSError) as exc:
            raise CLIError(
                f"cannot reach the agent at {self.socket_path}: is cilium-py-agent running?"
            ) from exc
        except requests.Timeout as exc:
            raise CLIError(f"the agent at {self.socket_path} did not answer in time") from exc
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
