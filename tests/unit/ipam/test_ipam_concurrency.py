"""No address is handed out twice under concurrency: threads and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cilium_py.errors import PoolExhausted
from cilium_py.ipam import IPAM
from cilium_py.store import Store, open_store


def test_fifty_threads_get_fifty_distinct_addresses(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", "fd10:9::/120")
    barrier = threading.Barrier(50)

    def one(i: int) -> tuple[str, str]:
        barrier.wait()
        return str(ipam.allocate(4, f"ep{i}")), str(ipam.allocate(6, f"ep{i}"))

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert len({r[0] for r in results}) == 50
    assert len({r[1] for r in results}) == 50
    assert ipam.status()["ipv4"]["used"] == 50

    # and 50 concurrent releases bring the pool back to empty
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(lambda i: ipam.release_owner(f"ep{i}"), range(50)))
    assert ipam.allocations() == {}
    assert ipam.status()["ipv6"]["used"] == 0


def test_threads_racing_for_one_owner_share_one_address(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/24", None)
    barrier = threading.Barrier(20)

    def one(_: int) -> str:
        barrier.wait()
        return str(ipam.allocate(4, "same-owner"))

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = set(pool.map(one, range(20)))
    assert len(results) == 1
    assert ipam.allocations() == {results.pop(): "same-owner"}


def test_threads_on_small_pool_exhaust_cleanly(store: Store) -> None:
    ipam = IPAM(store, "10.9.0.0/28", None)  # 13 endpoint addresses
    barrier = threading.Barrier(30)

    def one(i: int) -> str | None:
        barrier.wait()
        try:
            return str(ipam.allocate(4, f"ep{i}"))
        except PoolExhausted:
            return None

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(one, range(30)))
    got = [r for r in results if r is not None]
    assert len(got) == len(set(got)) == 13


_WORKER = """
import json, os, sys, time
from cilium_py.errors import PoolExhausted
from cilium_py.ipam import IPAM
from cilium_py.store import open_store

state_dir, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ipam = IPAM(open_store(None, state_dir), "10.9.0.0/26", "fd10:9::/122")
while not os.path.exists(go):
    time.sleep(0.001)
got = []
for i in range(count):
    for family in (4, 6):
        try:
            got.append(str(ipam.allocate(family, f"{name}-{i}")))
        except PoolExhausted:
            got.append(None)
print(json.dumps(got))
"""


def test_four_processes_sharing_the_store_file(tmp_path: Path) -> None:
    """4 processes x 20 owners = 80 requests per family for 61 IPv4 and 62 IPv6
    addresses: every address goes out exactly once, the rest are refused as exhausted."""
    go = tmp_path / "go"
    IPAM(open_store(None, str(tmp_path)), "10.9.0.0/26", "fd10:9::/122")  # create schema
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), f"p{n}", "20", str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        for n in range(4)
    ]
    time.sleep(0.3)  # let them import and open the store
    go.touch()
    results: list[str | None] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.extend(json.loads(out))
    got = [r for r in results if r is not None]
    v4 = [r for r in got if "." in r]
    v6 = [r for r in got if ":" in r]
    assert len(v4) == len(set(v4)) == 61  # .2 .. .62: .63 is the broadcast
    assert len(v6) == len(set(v6)) == 62
    ipam = IPAM(open_store(None, str(tmp_path)), "10.9.0.0/26", "fd10:9::/122")
    assert len(ipam.allocations()) == 123
    assert ipam.status()["ipv4"]["free"] == 0
