"""Shared helpers for benchmarks: namespaces, a throwaway agent, statistics.

Benchmarks are scripts (``python -m tests.bench.bench_x``), not tests: they print
figures beside their peers measured in the same run, as ratios.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import RunningAgent, start_agent


def sh(*argv: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@contextmanager
def namespaces(*names: str) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
            made.append(n)
        yield made
    finally:
        for n in made:
            sh("ip", "netns", "del", n, check=False)


@contextmanager
def running_agent(node_ns: str, *flags: str) -> Iterator[RunningAgent]:
    work = tempfile.mkdtemp(prefix="cpyb-")
    bpf_root = f"/sys/fs/bpf/{name('cpyb')}"
    agent = None
    try:
        agent = start_agent(node_ns, work, bpf_root, "--log-level", "warning", *flags)
        yield agent
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    """Until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median_range(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def rss_kib(pid: int) -> int:
    """RSS of a process and its children (the agent is a gunicorn master + worker)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def now() -> float:
    return time.perf_counter()


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("benchmarks need root")
