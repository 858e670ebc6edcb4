"""Requests over the agent's unix socket: connect, send, read, and say why none came back.

On the ``_socket`` built-in rather than :mod:`socket` (which imports ``enum`` and
``selectors``): the CNI plugin pays every import on every exec. Long-lived callers (the
Docker driver, on every ``docker run``) keep one connection per thread alive instead of
connecting per call; one-shot callers (a CNI exec, a CLI command) send ``Connection:
close`` and need no threads. Every failure leaves here as a typed error from
:mod:`.errors`, never as a bare ``OSError`` or ``ValueError``.
"""

from __future__ import annotations

import _socket
import time

from . import codec, wire
from .errors import BROKEN, CLOSED, TIMEOUT, AgentUnreachable, UnreadableAnswer, unreachable_kind

TYPE_CHECKING = False  # the typing module costs start-up time in the CNI plugin
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

# Methods safe to send again when a reused connection dies under them: the agent's
# PUT, DELETE and full-list PATCH are idempotent; POST (reserve an address) is not.
_RETRYABLE = frozenset(("GET", "HEAD", "PUT", "DELETE", "PATCH"))


class Response:
    """One whole answer: status, headers (lower-cased names) and raw body."""

    __slots__ = ("status", "phrase", "headers", "content")

    def __init__(self, status: int, content: bytes = b"", headers: dict[str, str] | None = None,
                 phrase: str = "") -> None:
        self.status = status
        self.content = content
        self.headers = headers or {}
        self.phrase = phrase

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The decoded body; ``ValueError`` when it is not JSON."""
        return codec.loads(self.content)


class _Connection:
    """One connected socket and its reader."""

    __slots__ = ("sock", "reader", "served")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.reader = wire.Reader(sock.recv)
        self.served = 0

    def close(self) -> None:
        self.sock.close()

    def dropped(self) -> bool:
        """True when the server closed this idle connection (it reads as EOF).

        The agent's gunicorn drops connections idle for a few seconds; checking before
        reuse keeps a request from being written into a dead connection.
        """
        import select

        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class Stream:
    """An answer whose body is read as it comes (the monitor's NDJSON event stream)."""

    def __init__(self, transport: UnixTransport, conn: _Connection, head: wire.Head,
                 method: str, path: str, timeout: float) -> None:
        self._transport = transport
        self._conn = conn
        self._head = head
        self._method = method
        self._path = path
        self._timeout = timeout
        self.status = head.status

    def iter_lines(self) -> Iterator[bytes]:
        """The body's lines without their line ends (empty ones included: heartbeats)."""
        pending = b""
        with self._transport.translating(self._method, self._path, self._timeout):
            for piece in wire.body_pieces(self._conn.reader, self._head, self._method):
                pending += piece
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r")
        if pending:
            yield pending.rstrip(b"\r")

    def read(self) -> Response:
        """The rest of the body at once (for an error answer)."""
        with self._transport.translating(self._method, self._path, self._timeout):
            content = wire.read_body(self._conn.reader, self._head, self._method)
        return Response(self.status, content, self._head.headers, self._head.phrase)

    def close(self) -> None:
        self._conn.close()


class UnixTransport:
    """HTTP/1.1 to one unix socket; ``keep_alive`` keeps a connection per thread."""

    def __init__(self, socket_path: str, timeout: float, keep_alive: bool = False,
                 user_agent: str = "cilium-py") -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.user_agent = user_agent
        self._local = None
        if keep_alive:
            import threading

            self._local = threading.local()

    # -- connections -------------------------------------------------------------------
    def _connect(self, method: str, path: str, timeout: float) -> _Connection:
        """Connect, waiting out a full listen backlog.

        With a timeout set the socket is non-blocking, and a unix socket whose backlog
        is full answers EAGAIN at once instead of waiting (as TCP would): under a burst
        of concurrent calls that must mean "retry shortly", not "agent unreachable".
        """
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            try:
                sock.connect(self.socket_path)
                return _Connection(sock)
            except BlockingIOError as exc:
                if time.monotonic() + pause <= deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
                    continue
                error: OSError = exc
            except OSError as exc:
                error = exc
            sock.close()
            raise AgentUnreachable(self.socket_path, method, path, unreachable_kind(error),
                                   error, timeout, connecting=True) from None

    def _pooled(self) -> _Connection | None:
        conn = getattr(self._local, "conn", None) if self._local is not None else None
        if conn is not None and conn.dropped():
            conn.close()
            self._local.conn = conn = None  # type: ignore[union-attr]
        return conn

    def _keep(self, conn: _Connection | None) -> None:
        if self._local is not None:
            self._local.conn = conn

    def close(self) -> None:
        """Close this thread's kept-alive connection, if any."""
        conn = getattr(self._local, "conn", None) if self._local is not None else None
        if conn is not None:
            conn.close()
        self._keep(None)

    # -- calls -------------------------------------------------------------------------
    def translating(self, method: str, path: str, timeout: float) -> _Translate:
        """A context in which socket and framing errors become the typed ones."""
        return _Translate(self.socket_path, method, path, timeout)

    def request(self, method: str, path: str, payload: bytes | None = None,
                timeout: float | None = None) -> Response:
        """Send one request and read the whole answer."""
        limit = self.timeout if timeout is None else timeout
        data = wire.build_request(method, path, payload, self.keep_alive, self.user_agent)
        while True:
            conn = self._pooled()
            reused = conn is not None
            if conn is None:
                conn = self._connect(method, path, limit)
            conn.sock.settimeout(limit)
            try:
                with self.translating(method, path, limit):
                    conn.sock.sendall(data)
                    head = wire.read_head(conn.reader)
                    if head is None:
                        raise AgentUnreachable(self.socket_path, method, path, CLOSED)
                    content = wire.read_body(conn.reader, head, method)
            except AgentUnreachable as exc:
                conn.close()
                self._keep(None)
                if reused and exc.kind != TIMEOUT and method in _RETRYABLE:
                    continue  # a kept-alive connection died: once more on a new one
                raise
            except BaseException:
                conn.close()
                self._keep(None)
                raise
            conn.served += 1
            if self.keep_alive and head.keeps_alive():
                self._keep(conn)
            else:
                conn.close()
                self._keep(None)
            return Response(head.status, content, head.headers, head.phrase)

    def stream(self, method: str, path: str, timeout: float | None = None) -> Stream:
        """Send one request on a connection of its own and return once the head is in."""
        limit = self.timeout if timeout is None else timeout
        conn = self._connect(method, path, limit)
        try:
            with self.translating(method, path, limit):
                conn.sock.sendall(wire.build_request(method, path, None, False,
                                                     self.user_agent))
                head = wire.read_head(conn.reader)
                if head is None:
                    raise AgentUnreachable(self.socket_path, method, path, CLOSED)
        except BaseException:
            conn.close()
            raise
        return Stream(self, conn, head, method, path, limit)


class _Translate:
    """Turns what a socket and the parser raise into :mod:`.errors` types.

    A class rather than :func:`contextlib.contextmanager`: ``contextlib`` is one more
    import for every CNI exec.
    """

    __slots__ = ("socket_path", "method", "path", "timeout")

    def __init__(self, socket_path: str, method: str, path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.method = method
        self.path = path
        self.timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, AgentUnreachable | UnreadableAnswer):
            return False
        if isinstance(exc, TimeoutError):
            raise AgentUnreachable(self.socket_path, self.method, self.path, TIMEOUT, exc,
                                   self.timeout) from None
        if isinstance(exc, OSError):
            raise AgentUnreachable(self.socket_path, self.method, self.path, BROKEN, exc,
                                   self.timeout) from None
        if isinstance(exc, ValueError):
            too_large = isinstance(exc, wire.TooLarge)
            raise UnreadableAnswer(
                "the agent's answer is too large" if too_large else
                f"unreadable answer from the agent to {self.method} {self.path}",
                self.socket_path, self.method, self.path, "" if too_large else str(exc),
            ) from None
        return False
