"""Kafka proxy cost: messages/s and request latency through the proxy vs direct.

Peer in the same run: the same test broker (tests/support/kafka_broker.py) reached
directly. Over loopback, pinned: the client on CPU ``--client-cpu``, the broker on
``--broker-cpu``, the proxy (its own process, the agent's KafkaProxy code with a
Star-Wars-like policy: produce and consume allowed on the bench topic, every request
checked) on ``--proxy-cpu``. Rounds alternate direct/proxy (A B, B A, ...).

- produce: kcat -P of ``--messages`` 100-byte messages (acks=1, librdkafka batching),
  messages/s from the wall time of the run;
- consume: kcat -C of the same messages from the beginning, messages/s likewise;
- latency: a raw client sends one-message Produce requests (acks=1) one at a time and
  times each answer; p50/p99 through the proxy, direct, and their difference.

    python -m tests.bench.bench_kafka [--rounds 3] [--messages 1000000] [--pings 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

from tests.bench.common import free_port, median_range, percentile, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC_RULES = ({"role": "produce", "topic": "{t}"}, {"role": "consume", "topic": "{t}"})


def pinned(cpu: int, *argv: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", str(cpu), *argv], cwd=ROOT, **kw)


def serve_proxy(listen: int, upstream: int, topic_prefix: str) -> None:
    """The proxy process: KafkaProxy on ``listen`` in front of the broker."""
    from cilium_py.policy import KafkaRule
    from cilium_py.policy.kafka import KafkaPolicy, KafkaRequestInfo
    from cilium_py.proxy.kafka.proxy import KafkaProxy, static_resolver

    class PrefixPolicy(KafkaPolicy):
        """produce/consume on topics of this run (their names carry the prefix)."""

    base = KafkaPolicy.build([KafkaRule(role=r["role"], topic=f"{topic_prefix}-{i}")
                              for i in range(64) for r in TOPIC_RULES])
    assert base.check(KafkaRequestInfo(0, 7, "b", (f"{topic_prefix}-0",))).allowed
    records = [0]

    def count(_rec: Any) -> None:
        records[0] += 1

    async def main() -> None:
        proxy = KafkaProxy(static_resolver(("127.0.0.1", upstream), base), count)
        await proxy.listen("127.0.0.1", listen)
        await asyncio.Event().wait()

    asyncio.run(main())


class Setup:
    """Two brokers (one advertises itself, one the proxy) and the proxy."""

    def __init__(self, stack: ExitStack, args: argparse.Namespace, prefix: str) -> None:
        self.direct_port, self.behind_port, self.proxy_port = free_port(), free_port(), free_port()
        py = sys.executable
        for port, adv in ((self.direct_port, self.direct_port),
                          (self.behind_port, self.proxy_port)):
            proc = pinned(args.broker_cpu, py, "-m", "tests.support.kafka_broker", "--listen",
                          f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{adv}",
                          stdout=subprocess.DEVNULL)
            stack.callback(_stop, proc)
        proxy = pinned(args.proxy_cpu, py, "-m", "tests.bench.bench_kafka", "--serve-proxy",
                       str(self.proxy_port), str(self.behind_port), prefix)
        stack.callback(_stop, proxy)
        for port in (self.direct_port, self.behind_port, self.proxy_port):
            wait_port(port)

    def address(self, mode: str) -> str:
        return f"127.0.0.1:{self.direct_port if mode == 'direct' else self.proxy_port}"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def kcat(cpu: int, *argv: str, data: bytes | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(["taskset", "-c", str(cpu), "kcat", *argv], input=data,
                          capture_output=True, timeout=600)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"kcat {' '.join(argv)}: {done.stderr.decode()[-500:]}")
    return took


def produce_rate(args: argparse.Namespace, address: str, topic: str, payload: bytes) -> float:
    took = kcat(args.client_cpu, "-P", "-b", address, "-t", topic, "-X", "linger.ms=5",
                "-X", "acks=1", data=payload)
    return args.messages / took


def consume_rate(args: argparse.Namespace, address: str, topic: str) -> float:
    took = kcat(args.client_cpu, "-C", "-b", address, "-t", topic, "-o", "beginning",
                "-c", str(args.messages), "-e", "-q")
    return args.messages / took


def ping_latencies(address: str, topic: str, count: int) -> list[float]:
    """RTT in microseconds of one-message Produce requests sent one at a time."""
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.memory_records import MemoryRecordsBuilder

    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1024)
    builder.append(0, None, b"x" * 100, [])
    builder.close()
    batch = bytes(builder.buffer())
    T = ProduceRequest.TopicProduceData
    host, port = address.rsplit(":", 1)
    out = []
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count + 100):
            req = ProduceRequest(version=7, acks=1, timeout_ms=1000, topic_data=[
                T(name=topic, partition_data=[T.PartitionProduceData(index=0, records=batch)])])
            req.with_header(correlation_id=i, client_id="bench")
            frame = bytes(req.encode(header=True, framed=True))
            start = time.perf_counter()
            sock.sendall(frame)
            head = _recv(sock, 4)
            _recv(sock, struct.unpack(">i", head)[0])
            if i >= 100:  # warm-up: the first requests also create the topic
                out.append((time.perf_counter() - start) * 1e6)
    return out


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def loadavg() -> float:
    return os.getloadavg()[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--pings", type=int, default=5000)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--broker-cpu", type=int, default=1)
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--serve-proxy", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_proxy:
        listen, upstream, prefix = args.serve_proxy
        serve_proxy(int(listen), int(upstream), prefix)
        return 0
    prefix = f"cpyb{os.getpid()}"
    payload = b"".join(b"%099d\n" % i for i in range(args.messages))
    load_start = loadavg()
    results: dict[str, dict[str, list[float]]] = {
        m: {"produce": [], "consume": [], "p50": [], "p99": []} for m in ("direct", "proxy")}
    ratios: dict[str, list[float]] = {"produce": [], "consume": []}
    with ExitStack() as stack:
        setup = Setup(stack, args, prefix)
        topic_n = 0
        for rnd in range(args.rounds):
            order = ("direct", "proxy") if rnd % 2 == 0 else ("proxy", "direct")
            this: dict[str, dict[str, float]] = {}
            for mode in order:
                topic = f"{prefix}-{topic_n}"
                topic_n += 1
                address = setup.address(mode)
                prod = produce_rate(args, address, topic, payload)
                cons = consume_rate(args, address, topic)
                lat = ping_latencies(address, f"{prefix}-{topic_n}", args.pings)
                topic_n += 1
                this[mode] = {"produce": prod, "consume": cons}
                r = results[mode]
                r["produce"].append(prod)
                r["consume"].append(cons)
                r["p50"].append(percentile(lat, 50))
                r["p99"].append(percentile(lat, 99))
                print(f"round {rnd + 1} {mode:6}: produce {prod:9.0f} msg/s, consume "
                      f"{cons:9.0f} msg/s, produce RTT p50 {percentile(lat, 50):7.1f} us "
                      f"p99 {percentile(lat, 99):7.1f} us", flush=True)
            for kind in ratios:
                ratios[kind].append(this["proxy"][kind] / this["direct"][kind])
    load_end = loadavg()
    print()
    print(f"CPUs: client {args.client_cpu}, broker {args.broker_cpu}, proxy {args.proxy_cpu}; "
          f"{args.messages} messages of 100 bytes; {args.rounds} rounds; "
          f"load average (1 min) {load_start:.2f} at start, {load_end:.2f} at end")
    print("| | direct | through the proxy | ratio (proxy/direct, per round) |")
    print("|---|---|---|---|")
    for kind in ("produce", "consume"):
        d, q = results["direct"][kind], results["proxy"][kind]
        print(f"| {kind} msg/s | {statistics.median(d):.0f} | {statistics.median(q):.0f} | "
              f"{median_range(ratios[kind])} |")
    for pct in ("p50", "p99"):
        d, q = results["direct"][pct], results["proxy"][pct]
        added = [b - a for a, b in zip(d, q, strict=True)]
        print(f"| Produce RTT {pct} us | {statistics.median(d):.1f} | {statistics.median(q):.1f}"
              f" | added {statistics.median(added):.1f} us [{min(added):.1f}-{max(added):.1f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
