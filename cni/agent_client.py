"""The agent's REST API over its unix socket, with the least start-up cost possible.

Every CNI exec starts a fresh interpreter, so import time is the plugin's budget.
``http.client`` pulls in the ``email`` package (about 15 ms here) and ``socket`` pulls
in ``enum`` and ``selectors``; this speaks the small subset of HTTP/1.1 the agent's
answers need (one request per connection, ``Content-Length`` or chunked bodies, or
read-to-close) directly on the ``_socket`` built-in, with JSON from :mod:`codec`.
"""

from __future__ import annotations

import _socket
import time

from . import codec
from .errors import INTERNAL, AgentUnreachable, CNIError

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

DEFAULT_TIMEOUT = 120.0  # creating an endpoint means netlink and map work in the agent
_MAX_RESPONSE = 64 * 1024 * 1024


class Response:
    """Status and decoded JSON body (``None`` when the body is empty)."""

    __slots__ = ("status", "body")

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def build_request(method: str, path: str, body: Any = None) -> bytes:
    """The request bytes; pure so that tests can see exactly what is sent."""
    payload = b"" if body is None else codec.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: cilium-py", "Connection: close",
            "Accept: application/json", "User-Agent: cilium-py-cni"]
    if body is not None:
        head.append("Content-Type: application/json")
    if body is not None or method in ("PUT", "POST", "PATCH"):
        head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError("truncated chunked body")
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return bytes(out)
        start = eol + 2
        if start + size > len(data):
            raise ValueError("truncated chunk")
        out += data[start:start + size]
        pos = start + size + 2


def parse_response(raw: bytes) -> Response:
    """Bytes of a whole response (the server closed) -> status and JSON body."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers in the agent's answer")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(rest)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(rest) < length:
            raise ValueError("the agent's answer is shorter than its Content-Length")
        body = rest[:length]
    else:
        body = rest
    if status in (204, 304) or not body.strip():
        return Response(status, None)
    try:
        return Response(status, codec.loads(body))
    except ValueError:
        # A proxy or crash page rather than the API: keep the text for the error.
        return Response(status, {"error": body[:200].decode("utf-8", "replace")})


class AgentClient:
    """One request per connection: a CNI exec makes one or two calls and exits."""

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Response:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            self._connect(sock)
            try:
                sock.sendall(build_request(method, path, body))
                chunks = []
                size = 0
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _MAX_RESPONSE:
                        raise CNIError(INTERNAL, "the agent's answer is too large")
            except TimeoutError:
                raise AgentUnreachable(
                    self.socket_path, f"no answer to {method} {path} in {self.timeout}s"
                ) from None
            except OSError as exc:
                raise AgentUnreachable(self.socket_path, f"{method} {path}: {exc}") from None
        finally:
            sock.close()
        raw = b"".join(chunks)
        if not raw:
            raise AgentUnreachable(self.socket_path, f"{method} {path}: connection closed "
                                   "without an answer")
        try:
            return parse_response(raw)
        except ValueError as exc:
            raise CNIError(INTERNAL, f"unreadable answer from the agent to {method} {path}",
                           str(exc)) from None

    def _connect(self, sock: _socket.socket) -> None:
        """Connect, waiting out a full listen backlog.

        With a timeout set the socket is non-blocking, and a unix socket whose backlog
        is full answers EAGAIN at once instead of waiting (as TCP would): under a burst
        of concurrent execs that must mean "retry shortly", not "agent unreachable".
        """
        deadline = time.monotonic() + self.timeout
        pause = 0.002
        while True:
            try:
                sock.connect(self.socket_path)
                return
            except BlockingIOError as exc:
                if time.monotonic() + pause > deadline:
                    raise AgentUnreachable(self.socket_path, f"connect: {exc}") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except OSError as exc:
                raise AgentUnreachable(self.socket_path, f"connect: {exc}") from None

    # The calls the plugin makes.
    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> Response:
        return self.request("PUT", f"/v1/endpoint/{ep_id}", body)

    def get_endpoint(self, ep_id: str) -> Response:
        return self.request("GET", f"/v1/endpoint/{ep_id}")

    def get_interface(self, ep_id: str) -> Response:
        return self.request("GET", f"/v1/endpoint/{ep_id}/interface")

    def delete_endpoint(self, ep_id: str) -> Response:
        return self.request("DELETE", f"/v1/endpoint/{ep_id}")

    def list_endpoints(self) -> Response:
        return self.request("GET", "/v1/endpoint")

    def health(self) -> Response:
        return self.request("GET", "/v1/healthz")
