"""Sans-IO Kafka framing and request parsing: bytes in, requests out.

No sockets here (the h11 pattern): the proxy feeds what it reads into a
:class:`RequestParser` and takes complete :class:`Request` objects out, and does the
same with broker bytes and a :class:`ResponseFramer`. Whatever the bytes, the only
exception these raise is :class:`KafkaProtocolError`; after one the parser stays
failed, since a byte stream that lost its framing cannot be trusted again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cilium_py.policy.kafka import KafkaRequestInfo

from .schema import ApiSpec, apis, header_decoder

#: Kafka brokers refuse requests over ``socket.request.max.bytes`` (100 MiB by default).
DEFAULT_MAX_FRAME = 100 * 1024 * 1024

METADATA = 3
API_VERSIONS = 18

_LENGTH = struct.Struct(">i")
_HEAD = struct.Struct(">hhi")  # api key, api version, correlation id
_MIN_HEADER = _HEAD.size + 2  # plus the client id's length


class KafkaProtocolError(Exception):
    """The byte stream is not Kafka, or not Kafka this proxy may pass on.

    ``reason`` is one of ``malformed``, ``oversize``, ``unknown-api-key`` and
    ``unsupported-version``: what the log line and the monitor record say.
    ``api_key``/``api_version``/``correlation_id`` are set once the header was read.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        api_key: int | None = None,
        api_version: int | None = None,
        correlation_id: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


@dataclass(slots=True)
class Request:
    """One request, decoded. ``frame`` is the request as it came, length prefix
    included, so an allowed request is forwarded byte for byte.

    ``body`` is None for an ApiVersions request of a version newer than the parser
    knows: Kafka answers that one (version 0, UNSUPPORTED_VERSION) instead of closing.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    topics: tuple[str | None, ...]
    frame: bytes
    spec: ApiSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def expects_response(self) -> bool:
        """False for Produce with acks=0: the broker sends nothing back."""
        return self.body is None or bool(self.body.expect_response())

    @property
    def supported(self) -> bool:
        return self.body is not None

    def info(self) -> KafkaRequestInfo:
        return KafkaRequestInfo(self.api_key, self.api_version, self.client_id, self.topics)


class RequestParser:
    """Client bytes -> :class:`Request`. Call :meth:`feed`, then :meth:`next_request`
    until it returns None."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._failed: KafkaProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._failed is None:
            self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_request(self) -> Request | None:
        if self._failed is not None:
            raise self._failed
        frame = _next_frame(self._buf, self.max_frame, _MIN_HEADER, self._fail)
        if frame is None:
            return None
        try:
            return parse_request(frame)
        except KafkaProtocolError as exc:
            raise self._fail(exc) from None

    def _fail(self, exc: KafkaProtocolError) -> KafkaProtocolError:
        self._failed = exc
        self._buf = bytearray()
        return exc


def _next_frame(buf: bytearray, max_frame: int, min_size: int, fail: Any) -> bytes | None:
    """Cut one length-prefixed frame off ``buf`` (prefix included), or None for more."""
    if len(buf) < 4:
        return None
    (size,) = _LENGTH.unpack_from(buf, 0)
    if size < min_size:
        raise fail(KafkaProtocolError("malformed", f"frame size {size} is too small"))
    if size > max_frame:
        raise fail(
            KafkaProtocolError("oversize", f"frame of {size} bytes is over the {max_frame} limit")
        )
    if len(buf) < 4 + size:
        return None
    frame = bytes(buf[: 4 + size])
    del buf[: 4 + size]
    return frame


def parse_request(frame: bytes) -> Request:
    """Decode one whole request frame (length prefix included)."""
    data = memoryview(frame)
    if len(data) < 4 + _MIN_HEADER:
        raise KafkaProtocolError("malformed", "frame too short for a request header")
    api_key, api_version, correlation_id = _HEAD.unpack_from(data, 4)
    ids = {"api_key": api_key, "api_version": api_version, "correlation_id": correlation_id}
    spec = apis().get(api_key)
    if spec is None:
        raise KafkaProtocolError("unknown-api-key", f"API key {api_key} is not known", **ids)
    if not 0 <= api_version <= spec.max_version:
        if api_key == API_VERSIONS and api_version > spec.max_version:
            client_id = _classic_client_id(data, ids)
            return Request(api_key, api_version, correlation_id, client_id, None, (), frame, spec)
        raise KafkaProtocolError(
            "unsupported-version",
            f"{spec.name} v{api_version} is not supported (0-{spec.max_version})",
            **ids,
        )
    try:
        header, pos = header_decoder(spec.flexible(api_version))(data, 4)
        body, end = spec.decode_body(data, pos, api_version)
        topics = spec.topics(body, api_version)
    except Exception as exc:  # the generated decoders raise whatever bad bytes cause
        raise KafkaProtocolError(
            "malformed", f"{spec.name} v{api_version}: {type(exc).__name__}: {exc}", **ids
        ) from None
    if end != len(data):
        raise KafkaProtocolError(
            "malformed",
            f"{spec.name} v{api_version}: {len(data) - end} bytes after the request body",
            **ids,
        )
    return Request(
        api_key, api_version, correlation_id, header.client_id, body, topics, frame, spec
    )


def _classic_client_id(data: memoryview, ids: dict[str, int]) -> str | None:
    """The client id of a request whose body cannot be read (same place in every
    header version)."""
    (length,) = struct.unpack_from(">h", data, 12)
    if length < 0:
        return None
    raw = bytes(data[14 : 14 + length])
    if len(raw) != length:
        raise KafkaProtocolError("malformed", "client id runs past the frame", **ids)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise KafkaProtocolError("malformed", "client id is not UTF-8", **ids) from None


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    correlation_id: int
    frame: bytes  # length prefix included


class ResponseFramer:
    """Broker bytes -> whole response frames, each with its correlation id."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._failed: KafkaProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._failed is None:
            self._buf += data

    def next_response(self) -> ResponseFrame | None:
        if self._failed is not None:
            raise self._failed
        frame = _next_frame(self._buf, self.max_frame, 4, self._fail)
        if frame is None:
            return None
        (correlation_id,) = _LENGTH.unpack_from(frame, 4)
        return ResponseFrame(correlation_id, frame)

    def _fail(self, exc: KafkaProtocolError) -> KafkaProtocolError:
        self._failed = exc
        self._buf = bytearray()
        return exc
