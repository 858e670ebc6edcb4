"""The asyncio Kafka proxy over loopback, in front of the test broker.

Requests are encoded with kafka-python's classes and sent over plain sockets, so each
test controls exactly what is pipelined on a connection.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from kafka.protocol.consumer import (
    FetchRequest,
    FetchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
)
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record.memory_records import MemoryRecordsBuilder

from cilium_py.policy import KafkaRule
from cilium_py.policy.kafka import KafkaPolicy
from cilium_py.proxy.kafka.proxy import KafkaProxy, static_resolver
from cilium_py.proxy.kafka.runner import ProxyThread
from cilium_py.proxy.records import L7Record
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_strategies import frame

P = ProduceRequest
PT, PP = P.TopicProduceData, P.TopicProduceData.PartitionProduceData


def _batch(value: bytes = b"v") -> bytes:
    """One record batch (magic 2) holding one record, built as clients build them."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1024)
    builder.append(0, None, value, [])
    builder.close()
    return bytes(builder.buffer())


BATCH = _batch()


class Policy:
    """A policy the test can swap while connections are open."""

    def __init__(self, *rules: KafkaRule) -> None:
        self.current: KafkaPolicy | None = KafkaPolicy.build(rules)

    def set(self, *rules: KafkaRule) -> None:
        self.current = KafkaPolicy.build(rules)

    def __call__(self) -> KafkaPolicy | None:
        return self.current


class Setup:
    def __init__(self, broker: KafkaBroker, proxy: KafkaProxy, address: tuple[str, int]) -> None:
        self.broker, self.proxy, self.address = broker, proxy, address
        self.records: list[L7Record] = []

    def connect(self) -> Conn:
        return Conn(socket.create_connection(self.address, timeout=5))


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def recv(self) -> bytes:
        head = self._exactly(4)
        (size,) = struct.unpack(">i", head)
        return head + self._exactly(size)

    def closed(self) -> bool:
        """True when the proxy closed the connection (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def policy() -> Policy:
    return Policy(
        KafkaRule(role="produce", topic="allowed"),
        KafkaRule(api_key="fetch", topic="allowed"),
    )


@pytest.fixture
def setup(policy: Policy) -> Iterator[Setup]:
    with KafkaBroker(topics=["allowed", "secret"]) as broker:
        records: list[L7Record] = []
        proxy = KafkaProxy(
            static_resolver(broker.address, policy), records.append
        )
        with ProxyThread(proxy) as thread:
            address = thread.listen("127.0.0.1", 0)
            broker.advertise(address)
            s = Setup(broker, proxy, address)
            s.records = records
            yield s


def _produce(topic: str, corr: int, acks: int = 1, version: int = 7) -> bytes:
    body = P(
        version=version,
        acks=acks,
        timeout_ms=1000,
        topic_data=[PT(name=topic, partition_data=[PP(index=0, records=BATCH)])],
    )
    return frame(body, corr, "hq")


def _fetch(topic: str, corr: int) -> bytes:
    F = FetchRequest
    body = F(
        version=11,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(partition=0)])],
    )
    return frame(body, corr, "outpost")


def _corr(raw: bytes) -> int:
    return struct.unpack_from(">i", raw, 4)[0]


def _produce_errors(raw: bytes, version: int = 7) -> list[int]:
    resp = ProduceResponse.decode(raw, version=version, header=True, framed=True)
    return [p.error_code for t in resp.responses for p in t.partition_responses]


def test_answers_stay_in_request_order(setup: Setup) -> None:
    conn = setup.connect()
    conn.send(
        frame(MetadataRequest(version=9, topics=None), 1, "hq"),
        _produce("secret", 2),
        frame(ApiVersionsRequest(version=3, client_software_name="t"), 3, "hq"),
        _fetch("secret", 4),
        _produce("allowed", 5),
        _fetch("allowed", 6),
    )
    answers = [conn.recv() for _ in range(6)]
    assert [_corr(a) for a in answers] == [1, 2, 3, 4, 5, 6]
    assert _produce_errors(answers[1]) == [29]
    assert _produce_errors(answers[4]) == [0]
    resp = FetchResponse.decode(answers[3], version=11, header=True, framed=True)
    assert [p.error_code for t in resp.responses for p in t.partitions] == [29]
    assert setup.broker.messages("allowed") == 1 and setup.broker.messages("secret") == 0
    verdicts = [(r.fields["api-key"], r.verdict) for r in setup.records]
    assert verdicts == [
        ("metadata", "forwarded"),
        ("produce", "denied"),
        ("apiversions", "forwarded"),
        ("fetch", "denied"),
        ("produce", "forwarded"),
        ("fetch", "forwarded"),
    ]
    denied_produce = setup.records[1]
    assert denied_produce.fields["topics"] == ["secret"]
    assert denied_produce.fields["client-id"] == "hq"
    assert denied_produce.fields["error-code"] == 29
    assert denied_produce.parser == "kafka" and denied_produce.source == "127.0.0.1"
    assert denied_produce.destination_port == setup.broker.port
    conn.close()


def test_acks_zero_produce_gets_no_answer_allowed_or_denied(setup: Setup) -> None:
    conn = setup.connect()
    conn.send(
        _produce("secret", 1, acks=0),
        _produce("allowed", 2, acks=0),
        frame(ApiVersionsRequest(version=0), 3, "hq"),
    )
    assert _corr(conn.recv()) == 3
    assert setup.broker.messages("allowed") == 1 and setup.broker.messages("secret") == 0
    conn.close()


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (struct.pack(">ihhih", 10, 4, 0, 9, -1), "unknown-api-key"),
        (struct.pack(">i", 200 * 1024 * 1024), "oversize"),
        (struct.pack(">ihhih", 12, 0, 7, 9, -1) + b"\x00\x01", "malformed"),
        (struct.pack(">ihhih", 10, 3, 99, 9, -1), "unsupported-version"),
    ],
)
def test_bad_frame_closes_only_that_connection(setup: Setup, garbage: bytes, reason: str) -> None:
    setup.proxy.max_frame = 1 << 20
    good, bad = setup.connect(), setup.connect()
    good.send(frame(ApiVersionsRequest(version=0), 1, "c"))
    assert _corr(good.recv()) == 1
    bad.send(garbage)
    assert bad.closed()
    good.send(_produce("allowed", 2))
    assert _produce_errors(good.recv()) == [0]
    errors = [r for r in setup.records if r.verdict == "error"]
    assert [e.fields["reason"] for e in errors] == [reason]
    assert setup.proxy.stats.errors == 1
    # The server still accepts new connections.
    fresh = setup.connect()
    fresh.send(frame(ApiVersionsRequest(version=0), 3, "c"))
    assert _corr(fresh.recv()) == 3


def test_policy_change_applies_to_open_connections(setup: Setup, policy: Policy) -> None:
    conn = setup.connect()
    conn.send(_produce("secret", 1))
    assert _produce_errors(conn.recv()) == [29]
    policy.set(KafkaRule(role="produce"))
    conn.send(_produce("secret", 2))
    assert _produce_errors(conn.recv()) == [0]
    policy.current = None  # the port no longer has Kafka rules for this peer
    conn.send(_produce("allowed", 3))
    assert _produce_errors(conn.recv()) == [29]
    assert setup.records[-1].fields["reason"] == "no Kafka policy applies"


def test_api_versions_through_the_proxy_are_narrowed(setup: Setup) -> None:
    conn = setup.connect()
    conn.send(frame(ApiVersionsRequest(version=3, client_software_name="t"), 1, "c"))
    resp = ApiVersionsResponse.decode(conn.recv(), version=3, header=True, framed=True)
    versions = {a.api_key: a.max_version for a in resp.api_keys}
    assert versions[0] == 12 and versions[1] == 12 and versions[8] == 9
    # An ApiVersions version newer than the proxy knows is answered as Kafka does.
    conn.send(struct.pack(">ihhih", 10, 18, 99, 2, -1))
    resp = ApiVersionsResponse.decode(conn.recv(), version=0, header=True, framed=True)
    assert resp.error_code == 35


def test_denied_requests_without_topics_get_the_apis_own_error(setup: Setup) -> None:
    conn = setup.connect()
    beat = HeartbeatRequest(version=2, group_id="g", generation_id=1, member_id="m")
    conn.send(frame(beat, 1, "c"))
    resp = HeartbeatResponse.decode(conn.recv(), version=2, header=True, framed=True)
    assert resp.error_code == 30  # GROUP_AUTHORIZATION_FAILED


def test_broker_that_breaks_the_protocol_closes_the_client(setup: Setup) -> None:
    conn = setup.connect()
    conn.send(_produce("allowed", 1))
    conn.recv()

    # Make the broker answer with the wrong correlation id.
    original = setup.broker.broker.handle  # type: ignore[union-attr]

    async def wrong(payload: bytes) -> bytes | None:
        answer = await original(payload)
        return answer[:4] + b"\x7f\xff\xff\xff" + answer[8:] if answer else answer

    setup.broker.broker.handle = wrong  # type: ignore[union-attr,method-assign]
    conn.send(_produce("allowed", 2))
    assert conn.closed()
    assert setup.records[-1].verdict == "error"
    assert "correlation id" in setup.records[-1].fields["message"]


def test_unreachable_broker_closes_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    records: list[L7Record] = []
    proxy = KafkaProxy(static_resolver(dead, lambda: KafkaPolicy.build(())), records.append)
    with ProxyThread(proxy) as thread:
        conn = Conn(socket.create_connection(thread.listen("127.0.0.1", 0), timeout=5))
        assert conn.closed()
    assert records and records[0].fields["reason"] == "upstream"
