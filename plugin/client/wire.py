"""The subset of HTTP/1.1 the agent's API needs, as bytes in and bytes out.

Why not :mod:`http.client`: it imports the ``email`` package (about 15 ms), which every
CNI exec would pay. The agent (gunicorn) answers with ``Content-Length`` or chunked
bodies, or reads to close; that and request framing is all there is here. Reading goes
through :class:`Reader` over any ``recv``-like callable, so the same parser serves a
socket, a stream, and tests that hand it bytes.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs start-up time in the CNI plugin
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
# RFC 3986 unreserved characters: everything else in a path segment or query is escaped.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class TooLarge(ValueError):
    """The answer exceeds what a client should hold in memory."""


def quote(text: str, safe: str = "") -> str:
    """Percent-encode ``text`` as UTF-8, like ``urllib.parse.quote(text, safe)``.

    :mod:`urllib.parse` imports ``re`` and ``ipaddress``; this is the one function of it
    the client needs.
    """
    keep = _UNRESERVED | frozenset(safe.encode())
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in text.encode("utf-8"))


def with_query(path: str, params: Mapping[str, object] | None) -> str:
    """``path?k=v&...`` with keys and values escaped; ``None`` values are left out and a
    list or tuple repeats its key once per item (``--kafka-topic A --kafka-topic B``)."""
    if not params:
        return path
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is not None:
                pairs.append(f"{quote(str(key))}={quote(str(item))}")
    return f"{path}?{'&'.join(pairs)}" if pairs else path


def build_request(method: str, path: str, payload: bytes | None = None,
                  keep_alive: bool = False, user_agent: str = "cilium-py") -> bytes:
    """The request bytes; pure so that tests can see exactly what is sent.

    ``payload`` is a JSON document already encoded. PUT, POST and PATCH always carry a
    ``Content-Length`` (0 without a body) so that the server never waits for one.
    """
    head = [f"{method} {path} HTTP/1.1", "Host: cilium-py",
            "Connection: keep-alive" if keep_alive else "Connection: close",
            "Accept: application/json", f"User-Agent: {user_agent}"]
    if payload is not None:
        head.append("Content-Type: application/json")
    if payload is not None or method in ("PUT", "POST", "PATCH"):
        head.append(f"Content-Length: {len(payload or b'')}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (payload or b"")


class Reader:
    """Buffered reading of one connection; ``recv(n)`` returns b"" at end of stream."""

    __slots__ = ("_recv", "_buf", "eof")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self._recv(65536)
        if not chunk:
            self.eof = True
            return False
        self._buf += chunk
        return True

    def until(self, marker: bytes, limit: int) -> bytes | None:
        """Bytes up to and without ``marker`` (consumed); None at a clean end of stream."""
        start = 0
        while True:
            pos = self._buf.find(marker, start)
            if pos >= 0:
                out = bytes(self._buf[:pos])
                del self._buf[:pos + len(marker)]
                return out
            if len(self._buf) > limit:
                raise ValueError("an over-long line in the agent's answer")
            start = max(0, len(self._buf) - len(marker) + 1)
            if not self._fill():
                if self._buf:
                    raise ValueError("the agent's answer ends in the middle of a line")
                return None

    def exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not self._fill():
                raise ValueError("the agent's answer is shorter than its framing says")
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def some(self) -> bytes:
        """What is buffered, else the next piece; b"" at end of stream."""
        if not self._buf and not self._fill():
            return b""
        out = bytes(self._buf)
        self._buf.clear()
        return out


class Head:
    """Status line and headers (names lower-cased) of one answer."""

    __slots__ = ("status", "phrase", "version", "headers")

    def __init__(self, status: int, phrase: str, version: str,
                 headers: dict[str, str]) -> None:
        self.status = status
        self.phrase = phrase
        self.version = version
        self.headers = headers

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or self.chunked:
            return None
        if not value.isdigit():
            raise ValueError(f"bad Content-Length {value!r}")
        return int(value)

    def has_body(self, method: str) -> bool:
        return method != "HEAD" and self.status not in (204, 304) and self.status >= 200

    def keeps_alive(self) -> bool:
        """Whether the connection may carry another request after this answer's body."""
        connection = self.headers.get("connection", "").lower()
        if "close" in connection:
            return False
        if self.version == "HTTP/1.0" and "keep-alive" not in connection:
            return False
        return self.chunked or self.length is not None or self.status in (204, 304)


def read_head(reader: Reader) -> Head | None:
    """The next answer's head; None when the stream ended before any byte of it."""
    raw = reader.until(b"\r\n\r\n", MAX_HEAD)
    if raw is None:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0], headers)


def body_pieces(reader: Reader, head: Head, method: str) -> Iterator[bytes]:
    """The body as it arrives, de-chunked; ends where the framing says the body ends."""
    if not head.has_body(method):
        return
    if head.chunked:
        while True:
            line = reader.until(b"\r\n", MAX_HEAD)
            if line is None:
                raise ValueError("truncated chunked body")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while reader.until(b"\r\n", MAX_HEAD):  # trailers, up to the empty line
                    pass
                return
            yield reader.exactly(size)
            reader.exactly(2)
        return
    length = head.length
    if length is not None:
        if length:
            yield reader.exactly(length)
        return
    while piece := reader.some():  # no framing: the body is everything until close
        yield piece


def read_body(reader: Reader, head: Head, method: str, limit: int = MAX_BODY) -> bytes:
    out = bytearray()
    for piece in body_pieces(reader, head, method):
        out += piece
        if len(out) > limit:
            raise TooLarge("the agent's answer is too large")
    return bytes(out)


def parse_response(raw: bytes, method: str = "GET") -> tuple[Head, bytes]:
    """A whole answer given as bytes -> its head and body (malformed: ``ValueError``)."""
    data = [raw]
    reader = Reader(lambda _n: data.pop() if data else b"")
    head = read_head(reader)
    if head is None:
        raise ValueError("no answer")
    return head, read_body(reader, head, method)
