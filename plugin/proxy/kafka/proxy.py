"""The Kafka proxy: one asyncio server, one pair of tasks per client connection.

For each connection the proxy learns (from a :class:`FlowResolver`) where the client
was going, who it is (its security identity) and which Kafka rules apply, then reads
requests with the sans-IO :class:`~.parser.RequestParser`:

- an allowed request is forwarded byte for byte;
- a denied one is answered by the proxy in the request's own version (see
  :mod:`.responses`), or not at all for acks=0 Produce, as a broker would;
- answers go back in request order, whichever side wrote them;
- a frame that does not parse, is too large, or has an unknown API key closes that
  connection (and only it) with a log line and a monitor record.

Policy is looked up again for every request, so a policy change applies to
connections already open. Nothing a client or broker sends can stop the server: a
connection's failure ends that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cilium_py.policy.kafka import KafkaPolicy, KafkaVerdict

from ...logs import get_logger
from ..records import L7Record
from . import records
from .parser import (
    API_VERSIONS,
    DEFAULT_MAX_FRAME,
    METADATA,
    KafkaProtocolError,
    Request,
    RequestParser,
    ResponseFramer,
)
from .records import FlowInfo, Peer
from .responses import (
    TOPIC_AUTHORIZATION_FAILED,
    UNSUPPORTED_VERSION,
    ClusterInfo,
    deny_response,
    generic_error,
    narrow_api_versions,
)
from .responses import unsupported_version_response as unsupported_answer

log = get_logger("kafka-proxy")

READ_SIZE = 256 * 1024
#: Requests read ahead of their answers; past this the proxy stops reading the client.
MAX_PENDING = 256
CONNECT_TIMEOUT = 10.0

RecordSink = Callable[[L7Record], None]


@dataclass
class Flow:
    """One client connection as the datapath and policy see it.

    ``policy`` is called for every request: it returns the Kafka rules that apply to
    this source identity and destination port now, or None when none do any more
    (then every request is denied: fail closed).
    """

    info: FlowInfo
    upstream: tuple[str, int]
    policy: Callable[[], KafkaPolicy | None]
    #: Upstream from the client's own address (IP_TRANSPARENT bind), so the
    #: destination's policy sees the client's identity, not the node's.
    transparent: bool = False
    #: SO_MARK of the upstream socket (the datapath's from-proxy marks).
    mark: int | None = None


class FlowResolver(Protocol):
    def resolve(self, client: tuple[str, int], local: tuple[str, int]) -> Flow | None:
        """The flow of a new connection, or None to refuse it."""


@dataclass
class ProxyStats:
    connections: int = 0
    forwarded: int = 0
    denied: int = 0
    errors: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Slot:
    request: Request
    answer: bytes | None = None


class KafkaProxy:
    """Serves Kafka clients on the sockets it is given or binds."""

    def __init__(
        self,
        resolver: FlowResolver,
        record: RecordSink | None = None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.resolver = resolver
        self.record = record or (lambda _rec: None)
        self.max_frame = max_frame
        self.stats = ProxyStats()
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()
        #: The brokers each upstream last listed (for denied Metadata requests).
        self.clusters: dict[tuple[str, int], ClusterInfo] = {}

    async def listen(
        self, host: str, port: int, resolver: FlowResolver | None = None, **kwargs: Any
    ) -> tuple[str, int]:
        """Bind and serve; returns the bound address (port 0 picks one)."""
        accept = functools.partial(self._accept, resolver or self.resolver)
        server = await asyncio.start_server(accept, host, port, **kwargs)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def serve_socket(self, sock: socket.socket, resolver: FlowResolver | None = None) -> None:
        """Serve an already bound, listening socket (e.g. a transparent one)."""
        accept = functools.partial(self._accept, resolver or self.resolver)
        server = await asyncio.start_server(accept, sock=sock)
        self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._conns):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        self._servers.clear()

    def _emit(self, rec: L7Record) -> None:
        try:
            self.record(rec)
        except Exception:  # a broken monitor must not break proxying
            log.exception("kafka proxy: monitor record sink failed")

    async def _accept(
        self,
        resolver: FlowResolver,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._connection(resolver, reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("kafka proxy: connection failed")
            self.stats.errors += 1
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(
        self, resolver: FlowResolver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]
        try:
            flow = resolver.resolve(client, local)
        except Exception:  # fail closed: no policy, no connection
            log.exception("kafka proxy: resolving %s -> %s failed", client, local)
            flow = None
        if flow is None:
            self.stats.refused += 1
            log.warning("kafka proxy: no flow for %s -> %s, closing", client, local)
            return
        _tune(writer)
        try:
            up_reader, up_writer = await asyncio.wait_for(_open_upstream(flow), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self.stats.errors += 1
            log.warning("kafka proxy: cannot reach %s:%s: %s", *flow.upstream, exc)
            self._emit(records.error_record(flow.info, "upstream", str(exc)))
            return
        _tune(up_writer)
        self.stats.connections += 1
        conn = _Connection(self, flow, reader, writer, up_reader, up_writer)
        try:
            await conn.run()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SO_MARK = 36


async def _open_upstream(flow: Flow) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the flow's upstream, from the client's address when transparent."""
    if not flow.transparent and flow.mark is None:
        return await asyncio.open_connection(*flow.upstream)
    host, port = flow.upstream
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if flow.mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, flow.mark)
        if flow.transparent:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            sock.bind((flow.info.source.address, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def transparent_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening socket that accepts connections the datapath assigned to it,
    whatever their destination (IP_TRANSPARENT on the wildcard address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Connection:
    proxy: KafkaProxy
    flow: Flow
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    up_reader: asyncio.StreamReader
    up_writer: asyncio.StreamWriter
    slots: deque[_Slot] = field(default_factory=deque)
    awaiting: deque[_Slot] = field(default_factory=deque)
    room: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        self.room.set()
        tasks = [
            asyncio.ensure_future(self._client_side()),
            asyncio.ensure_future(self._broker_side()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- client -> proxy -> broker ---------------------------------------------------

    async def _client_side(self) -> None:
        parser = RequestParser(self.proxy.max_frame)
        while True:
            await self.room.wait()
            data = await self.reader.read(READ_SIZE)
            if not data:
                return
            parser.feed(data)
            forwarded = False
            while True:
                try:
                    req = parser.next_request()
                except KafkaProtocolError as exc:
                    self._protocol_error("client", exc)
                    if forwarded:
                        await self.up_writer.drain()
                    return
                if req is None:
                    break
                forwarded |= self._handle(req)
            if len(self.slots) >= MAX_PENDING:
                self.room.clear()
            self._flush()
            if forwarded:
                await self.up_writer.drain()
            await self.writer.drain()

    def _handle(self, req: Request) -> bool:
        """Decide on one request; True when it went to the broker."""
        policy = self.flow.policy()
        verdict = (
            policy.check(req.info())
            if policy is not None
            else KafkaVerdict(False, denied_topics=req.topics, reason="no Kafka policy applies")
        )
        stats = self.proxy.stats
        if verdict.allowed and req.supported:
            stats.forwarded += 1
            self._record(req, records.FORWARDED, 0, verdict.reason)
            if req.expects_response:
                slot = _Slot(req)
                self.slots.append(slot)
                self.awaiting.append(slot)
            self.up_writer.write(req.frame)
            return True
        if verdict.allowed:  # ApiVersions newer than the parser: answer as Kafka does
            stats.forwarded += 1
            self._record(req, records.FORWARDED, UNSUPPORTED_VERSION, "ApiVersions too new")
            self.slots.append(_Slot(req, unsupported_answer(req)))
            return False
        stats.denied += 1
        code = TOPIC_AUTHORIZATION_FAILED if req.topics else generic_error(req)
        self._record(req, records.DENIED, code, verdict.reason)
        if req.expects_response:
            cluster = self.proxy.clusters.get(self.flow.upstream)
            self.slots.append(_Slot(req, deny_response(req, cluster)))
        return False

    def _record(self, req: Request, verdict: str, code: int, reason: str) -> None:
        self.proxy._emit(
            records.request_record(
                self.flow.info,
                verdict,
                api_key=req.api_key,
                api_version=req.api_version,
                correlation_id=req.correlation_id,
                client_id=req.client_id,
                topics=req.topics,
                error_code=code,
                reason=reason,
            )
        )

    # -- broker -> proxy -> client ---------------------------------------------------

    async def _broker_side(self) -> None:
        framer = ResponseFramer(self.proxy.max_frame)
        while True:
            data = await self.up_reader.read(READ_SIZE)
            if not data:
                return
            framer.feed(data)
            while True:
                try:
                    resp = framer.next_response()
                    if resp is None:
                        break
                    if not self.awaiting:
                        raise KafkaProtocolError("malformed", "response to no request")
                    slot = self.awaiting.popleft()
                    if resp.correlation_id != slot.request.correlation_id:
                        raise KafkaProtocolError(
                            "malformed",
                            f"response correlation id {resp.correlation_id}, expected "
                            f"{slot.request.correlation_id}",
                        )
                    slot.answer = self._answer(slot.request, resp.frame)
                except KafkaProtocolError as exc:
                    self._protocol_error("broker", exc)
                    return
            self._flush()
            await self.writer.drain()

    def _answer(self, req: Request, frame: bytes) -> bytes:
        """The broker's answer as the client gets it: ApiVersions narrowed (see
        :mod:`.schema`); the cluster's brokers noted from Metadata."""
        if req.api_key == API_VERSIONS:
            return narrow_api_versions(req, frame)
        if req.api_key == METADATA:
            try:
                info = ClusterInfo.from_response(req, frame)
            except Exception as exc:  # the client decodes it; it is not ours to judge
                log.debug("kafka proxy: unreadable Metadata answer: %s", exc)
            else:
                if info is not None:
                    self.proxy.clusters[self.flow.upstream] = info
        return frame

    def _flush(self) -> None:
        """Write every answer that is next in request order."""
        slots = self.slots
        while slots and slots[0].answer is not None:
            self.writer.write(slots.popleft().answer)  # type: ignore[arg-type]
        if len(slots) < MAX_PENDING:
            self.room.set()

    def _protocol_error(self, side: str, exc: KafkaProtocolError) -> None:
        self.proxy.stats.errors += 1
        info = self.flow.info
        log.warning(
            "kafka proxy: closing %s:%s -> %s:%s: %s sent %s",
            info.source.address,
            info.source.port,
            info.destination.address,
            info.destination.port,
            side,
            exc,
        )
        self.proxy._emit(
            records.error_record(
                info,
                exc.reason,
                f"{side}: {exc.message}",
                api_key=exc.api_key,
                api_version=exc.api_version,
                correlation_id=exc.correlation_id,
            )
        )


def static_resolver(
    upstream: tuple[str, int],
    policy: KafkaPolicy | Callable[[], KafkaPolicy | None],
    *,
    direction: str = "ingress",
) -> FlowResolver:
    """Every connection goes to ``upstream`` under one policy: for tests and benches."""
    lookup = policy if callable(policy) else (lambda: policy)

    class _Static:
        def resolve(self, client: tuple[str, int], local: tuple[str, int]) -> Flow:
            info = FlowInfo(Peer(client[0], client[1]), Peer(*upstream), direction)
            return Flow(info, upstream, lookup)

    return _Static()
