"""Real Kafka clients (kafka-python, aiokafka, kcat) through the proxy, over loopback.

The Star Wars policy decides: for each client's labels, the rules the broker's ingress
applies at 9092 come from ``trace_policy``, exactly what the agent hands the proxy for
that identity. Each identity gets its own proxy listener, and the test broker
advertises the listener of the client being tested, so every connection a client
opens (bootstrap, leader, coordinator) goes through it.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import kafka.errors
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as aio_errors
from kafka import KafkaConsumer, KafkaProducer

from cilium_py.labels import LabelSet
from cilium_py.policy import Protocol, parse_policy, trace_policy
from cilium_py.policy.kafka import KafkaPolicy
from cilium_py.proxy.kafka.proxy import KafkaProxy, static_resolver
from cilium_py.proxy.kafka.runner import ProxyThread
from cilium_py.proxy.records import L7Record
from tests.support import kafka_starwars as sw
from tests.support.kafka_broker import KafkaBroker

RULES = parse_policy(sw.POLICY)


def _policy_for(labels: str) -> KafkaPolicy | None:
    trace = trace_policy(
        RULES,
        LabelSet.parse([labels]),
        LabelSet.parse([sw.BROKER]),
        port=9092,
        protocol=Protocol.TCP,
        l7_proxies=("kafka",),
    )
    if trace.ingress.l7 is None or trace.ingress.l7.kafka is None:
        return None
    return KafkaPolicy.build(trace.ingress.l7.kafka)


class Empire:
    """The broker, and one proxy listener per client identity (by labels)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self.records: dict[str, list[L7Record]] = {}
        self._threads: list[ProxyThread] = []
        self._addresses: dict[str, tuple[str, int]] = {}

    def as_(self, labels: str) -> str:
        """Bootstrap address for a client with ``labels`` (and advertise it)."""
        if labels not in self._addresses:
            policy = _policy_for(labels)
            self.records[labels] = []
            proxy = KafkaProxy(
                static_resolver(self.broker.address, lambda p=policy: p),
                self.records[labels].append,
            )
            thread = ProxyThread(proxy).start()
            self._threads.append(thread)
            self._addresses[labels] = thread.listen("127.0.0.1", 0)
        address = self._addresses[labels]
        self.broker.advertise(address)
        return f"{address[0]}:{address[1]}"

    def verdicts(self, identity: str, api_key: str) -> list[tuple[str, tuple[str, ...]]]:
        return [
            (r.verdict, tuple(r.fields["topics"]))
            for r in self.records.get(identity, ())
            if r.fields["api-key"] == api_key
        ]

    def close(self) -> None:
        for thread in self._threads:
            thread.stop()


@pytest.fixture
def empire() -> Iterator[Empire]:
    with KafkaBroker(topics=[*sw.TOPICS, "rebel-plans"]) as broker:
        e = Empire(broker)
        try:
            yield e
        finally:
            e.close()


# -- kafka-python ---------------------------------------------------------------------


def _kp_producer(address: str, client: str) -> KafkaProducer:
    # Idempotence would need InitProducerId, which role "produce" does not allow
    # (see docs/kafka-policy.md); Cilium's example clients do not use it either.
    return KafkaProducer(
        bootstrap_servers=address, client_id=client, enable_idempotence=False, max_block_ms=10_000
    )


def _kp_consume(
    address: str, topic: str, count: int, group: str, wait_ms: int = 8000
) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=address,
        client_id=group,
        group_id=group,
        auto_offset_reset="earliest",
        consumer_timeout_ms=wait_ms,
        fetch_max_wait_ms=100,
    )
    try:
        got = []
        for message in consumer:
            got.append(message.value)
            if len(got) == count:
                break
        consumer.commit()
        return got
    finally:
        consumer.close()


def test_kafka_python_star_wars(empire: Empire) -> None:
    hq = _kp_producer(empire.as_(sw.HQ), "empire-hq")
    try:
        hq.send("deathstar-plans", b"exhaust port").get(10)
        for i in range(3):
            hq.send("empire-announce", b"announcement %d" % i).get(10)
        with pytest.raises(kafka.errors.TopicAuthorizationFailedError):
            hq.send("rebel-plans", b"x").get(10)
    finally:
        hq.close(timeout=5)
    assert empire.broker.messages("deathstar-plans") == 1
    assert empire.broker.messages("empire-announce") == 3
    assert empire.broker.messages("rebel-plans") == 0

    outpost = empire.as_(sw.OUTPOST)
    got = _kp_consume(outpost, "empire-announce", 3, "outpost")
    assert got == [b"announcement %d" % i for i in range(3)]
    # kafka-python's consumer logs "Topic deathstar-plans is not authorized" and
    # gets nothing; the proxy answered its Metadata with error 29.
    assert _kp_consume(outpost, "deathstar-plans", 1, "outpost-spy", wait_ms=2000) == []
    assert ("denied", ("deathstar-plans",)) in empire.verdicts(sw.OUTPOST, "metadata")
    spy = _kp_producer(outpost, "outpost")
    try:
        with pytest.raises(kafka.errors.TopicAuthorizationFailedError):
            spy.send("empire-announce", b"fake").get(10)
    finally:
        spy.close(timeout=5)
    assert empire.broker.messages("empire-announce") == 3

    backup = empire.as_(sw.BACKUP)
    assert _kp_consume(backup, "deathstar-plans", 1, "backup") == [b"exhaust port"]

    # What the monitor sees: produce verdicts per identity, with their topics.
    assert ("forwarded", ("deathstar-plans",)) in empire.verdicts(sw.HQ, "produce")
    assert all(v == "forwarded" for v, _ in empire.verdicts(sw.BACKUP, "fetch"))
    # The committed offsets went through too (OffsetCommit is part of role consume).
    assert empire.verdicts(sw.OUTPOST, "offsetcommit")[-1][0] == "forwarded"


# -- aiokafka -------------------------------------------------------------------------


async def _aio_flow(empire: Empire) -> None:
    hq = AIOKafkaProducer(bootstrap_servers=empire.as_(sw.HQ), client_id="empire-hq")
    await hq.start()
    try:
        await hq.send_and_wait("empire-announce", b"aio announcement")
        with pytest.raises(aio_errors.TopicAuthorizationFailedError):
            await hq.send_and_wait("rebel-plans", b"x")
    finally:
        await hq.stop()

    consumer = AIOKafkaConsumer(
        "empire-announce",
        bootstrap_servers=empire.as_(sw.OUTPOST),
        group_id="aio-outpost",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 15)
        assert message.value == b"aio announcement"
        await consumer.commit()
    finally:
        await consumer.stop()

    spy = AIOKafkaProducer(bootstrap_servers=empire.as_(sw.OUTPOST), client_id="outpost")
    await spy.start()
    try:
        with pytest.raises(aio_errors.TopicAuthorizationFailedError):
            await spy.send_and_wait("empire-announce", b"fake")
    finally:
        await spy.stop()


def test_aiokafka_star_wars(empire: Empire) -> None:
    asyncio.run(asyncio.wait_for(_aio_flow(empire), 60))
    assert empire.broker.messages("empire-announce") == 1
    assert empire.broker.messages("rebel-plans") == 0


# -- kcat (librdkafka) ----------------------------------------------------------------


def _kcat(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["kcat", "-X", "topic.metadata.refresh.interval.ms=1000", *args],
        input=data,
        capture_output=True,
        timeout=30,
    )


def test_kcat_star_wars(empire: Empire) -> None:
    hq = empire.as_(sw.HQ)
    done = _kcat("-P", "-b", hq, "-t", "deathstar-plans", "-c", "2", data=b"plan a\nplan b\n")
    assert done.returncode == 0, done.stderr
    assert empire.broker.messages("deathstar-plans") == 2

    backup = empire.as_(sw.BACKUP)
    done = _kcat("-C", "-b", backup, "-t", "deathstar-plans", "-o", "beginning", "-c", "2", "-e")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"plan a\nplan b\n"

    outpost = empire.as_(sw.OUTPOST)
    done = _kcat("-C", "-b", outpost, "-t", "deathstar-plans", "-o", "beginning", "-c", "1", "-e")
    assert done.returncode != 0
    assert b"authoriz" in done.stderr.lower(), done.stderr
    done = _kcat("-P", "-b", outpost, "-t", "empire-announce", "-c", "1", data=b"fake\n")
    assert b"authoriz" in done.stderr.lower(), done.stderr
    assert empire.broker.messages("empire-announce") == 0
