"""A small single-node Kafka broker for tests, good enough for real clients.

No real broker can be installed here (it needs Java and a download), yet the Kafka
proxy has to be tried with third-party clients (kafka-python, aiokafka, kcat). This
broker speaks the wire protocol with kafka-python's message classes, at whatever
version the client picks, and keeps everything in memory:

- ApiVersions (advertising versions that name topics: no topic-id versions), Metadata
  (auto-creates topics), Produce (record batches v2; acks=0 gets no answer), Fetch
  (long poll up to ``max_wait_ms``; no fetch sessions: it always answers session 0,
  so clients send full fetches), ListOffsets (earliest, latest, by timestamp),
  FindCoordinator, InitProducerId;
- consumer groups for one member at a time: JoinGroup (MEMBER_ID_REQUIRED first on
  v4+, as Kafka), SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch.

It does not share code with the proxy under test (its own framing, kafka-python's
classes directly). ``KafkaBroker`` runs in a thread for in-process tests;
``python -m tests.support.kafka_broker`` runs it as a process (inside a test netns).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import signal
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kafka.protocol.admin  # noqa: F401  (registers the message classes)
import kafka.protocol.consumer as consumer
import kafka.protocol.metadata as metadata
import kafka.protocol.producer as producer
from kafka.protocol.api_header import RequestHeader

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
UNSUPPORTED_VERSION = 35
MEMBER_ID_REQUIRED = 79

CLUSTER_ID = "cpyt-kafka-test"
NODE_ID = 0

#: (key, request class, highest version served).
_APIS: dict[int, tuple[Any, int]] = {
    0: (producer.ProduceRequest, 12),
    1: (consumer.FetchRequest, 12),
    2: (consumer.ListOffsetsRequest, 11),
    3: (metadata.MetadataRequest, 12),
    8: (consumer.OffsetCommitRequest, 9),
    9: (consumer.OffsetFetchRequest, 9),
    10: (metadata.FindCoordinatorRequest, 6),
    11: (consumer.JoinGroupRequest, 9),
    12: (consumer.HeartbeatRequest, 4),
    13: (consumer.LeaveGroupRequest, 5),
    14: (consumer.SyncGroupRequest, 5),
    18: (metadata.ApiVersionsRequest, 4),
    22: (producer.InitProducerIdRequest, 4),
}


# -- the log --------------------------------------------------------------------------


@dataclass
class Batch:
    base_offset: int
    last_offset: int
    max_timestamp: int
    data: bytes


@dataclass
class Partition:
    batches: list[Batch] = field(default_factory=list)
    next_offset: int = 0

    def append(self, records: bytes) -> int:
        """Append the record batches of one Produce partition; return the base offset."""
        base = self.next_offset
        for raw in _split_batches(records):
            data = bytearray(raw)
            (last_delta,) = struct.unpack_from(">i", data, 23)
            (max_ts,) = struct.unpack_from(">q", data, 35)
            struct.pack_into(">q", data, 0, self.next_offset)
            batch = Batch(self.next_offset, self.next_offset + last_delta, max_ts, bytes(data))
            self.batches.append(batch)
            self.next_offset = batch.last_offset + 1
        return base

    def read(self, offset: int, max_bytes: int) -> bytes:
        out: list[bytes] = []
        size = 0
        # Batches are in offset order: find the first one that holds ``offset``.
        lo, hi = 0, len(self.batches)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.batches[mid].last_offset < offset:
                lo = mid + 1
            else:
                hi = mid
        for batch in self.batches[lo:]:
            if out and size + len(batch.data) > max_bytes:
                break
            out.append(batch.data)
            size += len(batch.data)
        return b"".join(out)

    def offset_for_time(self, ts: int) -> int:
        for batch in self.batches:
            if batch.max_timestamp >= ts:
                return batch.base_offset
        return self.next_offset


class CorruptRecords(ValueError):
    pass


def _split_batches(records: bytes) -> Iterable[bytes]:
    pos = 0
    while pos < len(records):
        if len(records) - pos < 61:
            raise CorruptRecords("truncated record batch")
        (length,) = struct.unpack_from(">i", records, pos + 8)
        magic = records[pos + 16]
        if magic != 2:
            raise CorruptRecords(f"record batch magic {magic}, only v2 is kept")
        end = pos + 12 + length
        if end > len(records):
            raise CorruptRecords("record batch runs past the records")
        yield records[pos:end]
        pos = end


@dataclass
class Group:
    generation: int = 0
    member: str | None = None
    protocol: str | None = None
    protocol_type: str | None = None
    assignment: bytes = b""
    offsets: dict[tuple[str, int], tuple[int, str | None]] = field(default_factory=dict)


# -- the broker -----------------------------------------------------------------------


class Broker:
    """The broker's state and request handlers (one asyncio loop)."""

    def __init__(
        self,
        advertised: tuple[str, int],
        *,
        partitions: int = 1,
        auto_create: bool = True,
        topics: Iterable[str] = (),
    ) -> None:
        self.advertised = advertised
        self.default_partitions = partitions
        self.auto_create = auto_create
        self.topics: dict[str, list[Partition]] = {}
        self.topic_ids: dict[str, uuid.UUID] = {}
        self.groups: dict[str, Group] = {}
        self.requests: dict[int, int] = {}  # api key -> count
        self.client_ids: set[str | None] = set()
        self._producer_ids = itertools.count(1000)
        self._member_ids = itertools.count(1)
        self._data = asyncio.Event()
        self.connections: set[asyncio.Task[None]] = set()
        for name in topics:
            self.create(name)

    def create(self, name: str, partitions: int | None = None) -> list[Partition]:
        if name not in self.topics:
            self.topics[name] = [Partition() for _ in range(partitions or self.default_partitions)]
            self.topic_ids[name] = uuid.uuid4()
        return self.topics[name]

    def lookup(self, name: str | None, create: bool) -> list[Partition] | None:
        if name is None:
            return None
        if name not in self.topics and create and self.auto_create:
            self.create(name)
        return self.topics.get(name)

    def messages(self, topic: str) -> int:
        """How many records the topic holds (all partitions)."""
        return sum(p.next_offset for p in self.topics.get(topic, ()))

    # -- connection ---------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            while True:
                try:
                    head = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    return
                (size,) = struct.unpack(">i", head)
                if not 0 < size <= 200 * 1024 * 1024:
                    return
                payload = await reader.readexactly(size)
                answer = await self.handle(payload)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except _Close:
            return
        finally:
            if task is not None:
                self.connections.discard(task)
            writer.close()

    async def handle(self, payload: bytes) -> bytes | None:
        key, version = struct.unpack_from(">hh", payload, 0)
        api = _APIS.get(key)
        if api is None:
            raise _Close()
        cls, top = api
        if version > top:
            if key == 18:
                (corr,) = struct.unpack_from(">i", payload, 4)
                entry = metadata.ApiVersionsResponse.ApiVersion(
                    version=0, api_key=18, min_version=0, max_version=top
                )
                resp = metadata.ApiVersionsResponse(
                    version=0, error_code=UNSUPPORTED_VERSION, api_keys=[entry]
                )
                return _encode(resp, corr)
            raise _Close()
        flexible = cls.flexible_version_q(version)
        data = io.BytesIO(payload)
        header = RequestHeader.decode(data, flexible=flexible)
        req = cls.decode(data.read(), version=version)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.client_ids.add(header.client_id)
        handler = getattr(self, f"_{cls.__name__}")
        resp = await handler(req, version)
        if resp is None:
            return None
        return _encode(resp, header.correlation_id)

    # -- handlers -----------------------------------------------------------------

    async def _ApiVersionsRequest(self, req: Any, v: int) -> Any:
        R = metadata.ApiVersionsResponse
        keys = [
            R.ApiVersion(version=v, api_key=k, min_version=0, max_version=top)
            for k, (_cls, top) in sorted(_APIS.items())
        ]
        return R(version=v, error_code=NONE, api_keys=keys, throttle_time_ms=0)

    async def _MetadataRequest(self, req: Any, v: int) -> Any:
        R = metadata.MetadataResponse
        if req.topics is None or (v == 0 and not req.topics):
            names = list(self.topics)
        else:
            create = v < 4 or bool(req.allow_auto_topic_creation)
            names = []
            for t in req.topics:
                self.lookup(t.name, create)
                names.append(t.name)
        topics = []
        for name in names:
            parts = self.topics.get(name)
            if parts is None:
                topics.append(
                    R.MetadataResponseTopic(
                        version=v, error_code=UNKNOWN_TOPIC_OR_PARTITION, name=name, partitions=[]
                    )
                )
                continue
            topics.append(
                R.MetadataResponseTopic(
                    version=v,
                    error_code=NONE,
                    name=name,
                    topic_id=self.topic_ids[name],
                    is_internal=False,
                    partitions=[
                        R.MetadataResponseTopic.MetadataResponsePartition(
                            version=v,
                            error_code=NONE,
                            partition_index=i,
                            leader_id=NODE_ID,
                            leader_epoch=0,
                            replica_nodes=[NODE_ID],
                            isr_nodes=[NODE_ID],
                            offline_replicas=[],
                        )
                        for i in range(len(parts))
                    ],
                )
            )
        host, port = self.advertised
        broker = R.MetadataResponseBroker(version=v, node_id=NODE_ID, host=host, port=port)
        return R(
            version=v,
            throttle_time_ms=0,
            brokers=[broker],
            cluster_id=CLUSTER_ID,
            controller_id=NODE_ID,
            topics=topics,
        )

    async def _ProduceRequest(self, req: Any, v: int) -> Any:
        R = producer.ProduceResponse
        T, P = R.TopicProduceResponse, R.TopicProduceResponse.PartitionProduceResponse
        out = []
        for topic in req.topic_data:
            parts = self.lookup(topic.name, create=True)
            results = []
            for pd in topic.partition_data:
                code, base = NONE, -1
                if parts is None or not 0 <= pd.index < len(parts):
                    code = UNKNOWN_TOPIC_OR_PARTITION
                else:
                    try:
                        base = parts[pd.index].append(pd.records or b"")
                    except CorruptRecords:
                        code = CORRUPT_MESSAGE
                results.append(
                    P(
                        version=v,
                        index=pd.index,
                        error_code=code,
                        base_offset=base,
                        log_append_time_ms=-1,
                        log_start_offset=0,
                    )
                )
            out.append(T(version=v, name=topic.name, partition_responses=results))
        self._data.set()
        self._data = asyncio.Event()
        if req.acks == 0:
            return None
        return R(version=v, responses=out, throttle_time_ms=0)

    async def _FetchRequest(self, req: Any, v: int) -> Any:
        deadline = time.monotonic() + min(req.max_wait_ms, 30_000) / 1000
        while True:
            resp, size = self._fetch(req, v)
            left = deadline - time.monotonic()
            if size >= max(req.min_bytes, 1) or left <= 0:
                return resp
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), left)

    def _fetch(self, req: Any, v: int) -> tuple[Any, int]:
        R = consumer.FetchResponse
        T, P = R.FetchableTopicResponse, R.FetchableTopicResponse.PartitionData
        total = 0
        budget = req.max_bytes if v >= 3 else 1 << 30
        out = []
        for topic in req.topics:
            parts = self.lookup(topic.topic, create=False)
            results = []
            for fp in topic.partitions:
                code, hw, records = NONE, -1, b""
                if parts is None or not 0 <= fp.partition < len(parts):
                    code = UNKNOWN_TOPIC_OR_PARTITION
                else:
                    part = parts[fp.partition]
                    hw = part.next_offset
                    if not 0 <= fp.fetch_offset <= hw:
                        code = OFFSET_OUT_OF_RANGE
                    elif budget > 0:
                        records = part.read(fp.fetch_offset, min(fp.partition_max_bytes, budget))
                        budget -= len(records)
                        total += len(records)
                results.append(
                    P(
                        version=v,
                        partition_index=fp.partition,
                        error_code=code,
                        high_watermark=hw,
                        last_stable_offset=hw,
                        log_start_offset=0,
                        aborted_transactions=None,
                        preferred_read_replica=-1,
                        records=records,
                    )
                )
            out.append(T(version=v, topic=topic.topic, partitions=results))
        resp = R(version=v, throttle_time_ms=0, error_code=NONE, session_id=0, responses=out)
        return resp, total

    async def _ListOffsetsRequest(self, req: Any, v: int) -> Any:
        R = consumer.ListOffsetsResponse
        T, P = R.ListOffsetsTopicResponse, R.ListOffsetsTopicResponse.ListOffsetsPartitionResponse
        out = []
        for topic in req.topics:
            parts = self.lookup(topic.name, create=False)
            results = []
            for lp in topic.partitions:
                code, offset = NONE, -1
                if parts is None or not 0 <= lp.partition_index < len(parts):
                    code = UNKNOWN_TOPIC_OR_PARTITION
                else:
                    part = parts[lp.partition_index]
                    if lp.timestamp == -1:
                        offset = part.next_offset
                    elif lp.timestamp == -2:
                        offset = 0
                    else:
                        offset = part.offset_for_time(lp.timestamp)
                results.append(
                    P(
                        version=v,
                        partition_index=lp.partition_index,
                        error_code=code,
                        old_style_offsets=[offset] if offset >= 0 else [],
                        timestamp=-1,
                        offset=offset,
                        leader_epoch=0,
                    )
                )
            out.append(T(version=v, name=topic.name, partitions=results))
        return R(version=v, throttle_time_ms=0, topics=out)

    async def _FindCoordinatorRequest(self, req: Any, v: int) -> Any:
        R = metadata.FindCoordinatorResponse
        host, port = self.advertised
        if v < 4:
            return R(
                version=v,
                throttle_time_ms=0,
                error_code=NONE,
                error_message=None,
                node_id=NODE_ID,
                host=host,
                port=port,
            )
        coords = [
            R.Coordinator(version=v, key=k, node_id=NODE_ID, host=host, port=port, error_code=NONE)
            for k in req.coordinator_keys
        ]
        return R(version=v, throttle_time_ms=0, coordinators=coords)

    async def _InitProducerIdRequest(self, req: Any, v: int) -> Any:
        R = producer.InitProducerIdResponse
        return R(
            version=v,
            throttle_time_ms=0,
            error_code=NONE,
            producer_id=next(self._producer_ids),
            producer_epoch=0,
        )

    async def _JoinGroupRequest(self, req: Any, v: int) -> Any:
        R = consumer.JoinGroupResponse
        group = self.groups.setdefault(req.group_id, Group())
        if not req.member_id and v >= 4:
            member = f"member-{next(self._member_ids)}"
            return R(
                version=v,
                throttle_time_ms=0,
                error_code=MEMBER_ID_REQUIRED,
                generation_id=-1,
                protocol_name=None,
                leader="",
                member_id=member,
                members=[],
            )
        member = req.member_id or f"member-{next(self._member_ids)}"
        proto = req.protocols[0] if req.protocols else None
        group.generation += 1
        group.member = member
        group.protocol = proto.name if proto else None
        group.protocol_type = req.protocol_type
        M = R.JoinGroupResponseMember
        return R(
            version=v,
            throttle_time_ms=0,
            error_code=NONE,
            generation_id=group.generation,
            protocol_type=req.protocol_type,
            protocol_name=group.protocol,
            leader=member,
            skip_assignment=False,
            member_id=member,
            members=[
                M(
                    version=v,
                    member_id=member,
                    group_instance_id=req.group_instance_id,
                    metadata=proto.metadata if proto else b"",
                )
            ],
        )

    def _member_error(self, group_id: str, member: str, generation: int | None) -> int:
        group = self.groups.get(group_id)
        if group is None or group.member != member:
            return UNKNOWN_MEMBER_ID
        if generation is not None and generation != group.generation:
            return ILLEGAL_GENERATION
        return NONE

    async def _SyncGroupRequest(self, req: Any, v: int) -> Any:
        R = consumer.SyncGroupResponse
        code = self._member_error(req.group_id, req.member_id, req.generation_id)
        group = self.groups.get(req.group_id)
        if code == NONE and group is not None:
            for a in req.assignments or ():
                if a.member_id == req.member_id:
                    group.assignment = a.assignment
        return R(
            version=v,
            throttle_time_ms=0,
            error_code=code,
            protocol_type=group.protocol_type if group else None,
            protocol_name=group.protocol if group else None,
            assignment=group.assignment if group and code == NONE else b"",
        )

    async def _HeartbeatRequest(self, req: Any, v: int) -> Any:
        code = self._member_error(req.group_id, req.member_id, req.generation_id)
        return consumer.HeartbeatResponse(version=v, throttle_time_ms=0, error_code=code)

    async def _LeaveGroupRequest(self, req: Any, v: int) -> Any:
        R = consumer.LeaveGroupResponse
        group = self.groups.get(req.group_id)
        leaving = [req.member_id] if v < 3 else [m.member_id for m in req.members]
        results = []
        for member in leaving:
            ok = group is not None and group.member == member
            if ok and group is not None:
                group.member = None
            if v >= 3:
                results.append(
                    R.MemberResponse(
                        version=v,
                        member_id=member,
                        group_instance_id=None,
                        error_code=NONE if ok else UNKNOWN_MEMBER_ID,
                    )
                )
        return R(version=v, throttle_time_ms=0, error_code=NONE, members=results)

    async def _OffsetCommitRequest(self, req: Any, v: int) -> Any:
        R = consumer.OffsetCommitResponse
        T, P = (
            R.OffsetCommitResponseTopic,
            R.OffsetCommitResponseTopic.OffsetCommitResponsePartition,
        )
        group = self.groups.setdefault(req.group_id, Group())
        out = []
        for topic in req.topics:
            results = []
            for p in topic.partitions:
                group.offsets[(topic.name, p.partition_index)] = (
                    p.committed_offset,
                    p.committed_metadata,
                )
                results.append(P(version=v, partition_index=p.partition_index, error_code=NONE))
            out.append(T(version=v, name=topic.name, partitions=results))
        return R(version=v, throttle_time_ms=0, topics=out)

    async def _OffsetFetchRequest(self, req: Any, v: int) -> Any:
        R = consumer.OffsetFetchResponse
        if v >= 8:
            G = R.OffsetFetchResponseGroup
            T = G.OffsetFetchResponseTopics
            P = T.OffsetFetchResponsePartitions
            groups = []
            for g in req.groups:
                topics = self._committed(g.group_id, g.topics, v, T, P)
                groups.append(G(version=v, group_id=g.group_id, topics=topics, error_code=NONE))
            return R(version=v, throttle_time_ms=0, groups=groups)
        T = R.OffsetFetchResponseTopic
        P = T.OffsetFetchResponsePartition
        topics = self._committed(req.group_id, req.topics, v, T, P)
        return R(version=v, throttle_time_ms=0, topics=topics, error_code=NONE)

    def _committed(self, group_id: str, topics: Any, v: int, T: Any, P: Any) -> list[Any]:
        group = self.groups.get(group_id) or Group()
        if topics is None:
            wanted: dict[str, list[int]] = {}
            for name, part in group.offsets:
                wanted.setdefault(name, []).append(part)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in topics}
        out = []
        for name, parts in wanted.items():
            results = []
            for part in parts:
                offset, meta = group.offsets.get((name, part), (-1, ""))
                results.append(
                    P(
                        version=v,
                        partition_index=part,
                        committed_offset=offset,
                        committed_leader_epoch=-1,
                        metadata=meta,
                        error_code=NONE,
                    )
                )
            out.append(T(version=v, name=name, partitions=results))
        return out


class _Close(Exception):
    """A request this broker cannot answer: close the connection, as Kafka does."""


def _encode(resp: Any, correlation_id: int) -> bytes:
    resp.with_header(correlation_id=correlation_id)
    return bytes(resp.encode(header=True, framed=True))


# -- running it -----------------------------------------------------------------------


class KafkaBroker:
    """A :class:`Broker` on its own event loop thread, for in-process tests.

    ``advertise`` is the address put in Metadata and FindCoordinator answers (a
    proxy's, when clients should come back through it); by default the bound one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise: tuple[str, int] | None = None,
        **options: Any,
    ) -> None:
        self.host, self.port = host, port
        self._advertise = advertise
        self._options = options
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.broker: Broker | None = None
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> KafkaBroker:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.broker = Broker(self._advertise or (self.host, self.port), **self._options)
        self._server = await asyncio.start_server(self.broker.serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._advertise is None:
            self.broker.advertised = (self.host, self.port)

    def advertise(self, address: tuple[str, int]) -> None:
        assert self.broker is not None
        self.broker.advertised = address

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(broker, *args)`` on the broker's loop (its state is not locked)."""

        async def run() -> Any:
            return fn(self.broker, *args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def messages(self, topic: str) -> int:
        return self.call(Broker.messages, topic)

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            if self.broker is not None:
                tasks = list(self.broker.connections)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:9092", help="host:port to listen on")
    p.add_argument("--advertise", help="host:port for Metadata answers (default: --listen)")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--topic", action="append", default=[], help="create this topic")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    adv = args.advertise or args.listen
    ahost, _, aport = adv.rpartition(":")

    async def run() -> None:
        broker = Broker(
            (ahost.strip("[]"), int(aport)), partitions=args.partitions, topics=args.topic
        )
        server = await asyncio.start_server(broker.serve, host, int(port))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"listening {host}:{server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
