"""The embedded store: the contract every backend honours, plus durability."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cilium_py.store import open_store
from cilium_py.store.base import StoreError
from cilium_py.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(str(tmp_path / "store.db"))


def test_put_get_delete_list(store: SQLiteStore) -> None:
    assert store.get("a/1") is None
    r1 = store.put("a/1", b"one")
    r2 = store.put("a/2", b"two")
    store.put("b/1", b"other")
    assert r2 > r1
    kv = store.get("a/1")
    assert kv is not None and kv.value == b"one" and kv.mod_revision == r1
    assert [k.key for k in store.list("a/")] == ["a/1", "a/2"]
    assert store.delete("a/1") is True
    assert store.delete("a/1") is False
    assert [k.key for k in store.list("a/")] == ["a/2"]


def test_list_prefix_is_literal(store: SQLiteStore) -> None:
    store.put("x%/1", b"1")
    store.put("xy/1", b"2")
    store.put("x_/1", b"3")
    assert [k.key for k in store.list("x%")] == ["x%/1"]
    assert [k.key for k in store.list("x_")] == ["x_/1"]


def test_compare_and_swap(store: SQLiteStore) -> None:
    assert store.create("k", b"v1") is True
    assert store.create("k", b"again") is False
    rev = store.get("k").mod_revision
    assert store.compare_and_swap("k", rev + 100, b"v2") is False
    assert store.compare_and_swap("k", rev, b"v2") is True
    assert store.get("k").value == b"v2"
    assert store.compare_and_swap("k", rev, b"stale") is False
    new_rev = store.get("k").mod_revision
    assert store.compare_and_swap("k", new_rev, None) is True
    assert store.get("k") is None


def test_watch_sees_puts_and_deletes_in_order(store: SQLiteStore) -> None:
    start = store.revision()
    seen = []

    def watcher() -> None:
        for ev in store.watch("w/", start_revision=start, timeout=1.0):
            seen.append((ev.kind, ev.key, ev.value))

    t = threading.Thread(target=watcher)
    t.start()
    store.put("w/a", b"1")
    store.put("other", b"x")
    store.delete("w/a")
    t.join(5)
    assert seen == [("put", "w/a", b"1"), ("delete", "w/a", None)]


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    s1 = SQLiteStore(path)
    s1.put("persist", b"yes")
    s1.close()
    s2 = SQLiteStore(path)
    assert s2.get("persist").value == b"yes"
    assert s2.revision() >= 1


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(None, str(tmp_path)), SQLiteStore)
    assert isinstance(open_store(f"sqlite://{tmp_path}/x.db", str(tmp_path)), SQLiteStore)
    from cilium_py.store.etcd import EtcdStore

    assert isinstance(open_store("etcd://127.0.0.1:2379", str(tmp_path)), EtcdStore)
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("redis://x", str(tmp_path))


def _cas_increment(path: str, times: int) -> None:
    store = SQLiteStore(path)
    done = 0
    while done < times:
        kv = store.get("counter")
        current = int(kv.value) if kv else 0
        rev = kv.mod_revision if kv else 0
        if store.compare_and_swap("counter", rev, str(current + 1).encode()):
            done += 1


def test_concurrent_compare_and_swap_from_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "cas.db")
    SQLiteStore(path).close()  # never keep a connection open across fork()
    procs = [mp.get_context("fork").Process(target=_cas_increment, args=(path, 50))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    # No increment lost: every successful CAS saw the latest value.
    assert int(SQLiteStore(path).get("counter").value) == 200


def _writer(path: str, ack_fd: int) -> None:
    store = SQLiteStore(path)
    i = 0
    while True:
        store.put(f"k/{i:06d}", os.urandom(512))
        os.write(ack_fd, f"{i}\n".encode())
        i += 1


def test_kill_9_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = str(tmp_path / "crash.db")
    SQLiteStore(path).close()
    r, w = os.pipe()
    proc = mp.get_context("fork").Process(target=_writer, args=(path, w))
    proc.start()
    os.close(w)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    acked = [int(x) for x in os.read(r, 1 << 20).decode().split()]
    os.close(r)
    assert len(acked) > 10
    store = SQLiteStore(path)
    keys = {kv.key for kv in store.list("k/")}
    for i in acked:
        assert f"k/{i:06d}" in keys
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
