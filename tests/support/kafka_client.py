"""Real Kafka clients as a command, for tests that run them inside a namespace.

``python -m tests.support.kafka_client produce|consume ...`` prints one JSON object:
what the client library reported (messages, or the error's class name and text).
``--library aiokafka`` uses aiokafka instead of kafka-python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any


def _kp_produce(args: argparse.Namespace) -> dict[str, Any]:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        client_id=args.client_id,
        enable_idempotence=False,  # role "produce" does not include InitProducerId
        max_block_ms=int(args.timeout * 1000),
    )
    try:
        for message in args.messages:
            producer.send(args.topic, message.encode()).get(args.timeout)
        return {"sent": len(args.messages)}
    finally:
        producer.close(timeout=5)


def _kp_consume(args: argparse.Namespace) -> dict[str, Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        client_id=args.client_id,
        group_id=args.group,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(args.timeout * 1000),
        fetch_max_wait_ms=100,
    )
    try:
        got = []
        for message in consumer:
            got.append(message.value.decode())
            if len(got) >= args.count:
                break
        if args.group:
            consumer.commit()
        return {"messages": got}
    finally:
        consumer.close()


async def _aio_produce(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, client_id=args.client_id)
    await producer.start()
    try:
        for message in args.messages:
            await asyncio.wait_for(producer.send_and_wait(args.topic, message.encode()),
                                   args.timeout)
        return {"sent": len(args.messages)}
    finally:
        await producer.stop()


async def _aio_consume(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        client_id=args.client_id,
        group_id=args.group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        got = []
        while len(got) < args.count:
            message = await asyncio.wait_for(consumer.getone(), args.timeout)
            got.append(message.value.decode())
        return {"messages": got}
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("produce", "consume"))
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("messages", nargs="*")
    p.add_argument("--library", choices=("kafka-python", "aiokafka"), default="kafka-python")
    p.add_argument("--client-id", default="cpyt-client")
    p.add_argument("--group")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=8.0)
    args = p.parse_args(argv)
    try:
        if args.library == "aiokafka":
            run = _aio_produce if args.action == "produce" else _aio_consume
            result = asyncio.run(run(args))
        else:
            result = (_kp_produce if args.action == "produce" else _kp_consume)(args)
    except Exception as exc:  # the point is to report what the client saw
        result = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
