"""The store contract, held by every backend: the embedded SQLite store and etcd.

The etcd cases run against a real etcd (Debian's etcd-server) on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilium_py.store import EtcdTLS, Store, StoreError, open_store
from cilium_py.store.etcd import EtcdStore, parse_etcd_url
from cilium_py.store.sqlite import SQLiteStore
from tests.support.etcd import EtcdServer, free_port, remove_etcd, start_etcd
from tests.support.prefix_store import PrefixStore


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = start_etcd()
    yield server
    remove_etcd(server)


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SQLiteStore(str(tmp_path / "store.db"))
        yield s
        s.close()
        return
    server: EtcdServer = request.getfixturevalue("etcd")
    s = open_store(server.url, str(tmp_path))
    # One etcd serves every test of the module: give each its own keyspace.
    prefix = tmp_path.name + "/"
    yield PrefixStore(s, prefix)
    for kv in s.list(prefix):
        s.delete(kv.key)
    s.close()


def test_put_get_delete_list(store: Store) -> None:
    assert store.get("a/1") is None
    r1 = store.put("a/1", b"one")
    r2 = store.put("a/2", b"two")
    store.put("b/1", b"other")
    assert r2 > r1
    kv = store.get("a/1")
    assert kv is not None and kv.value == b"one" and kv.mod_revision == r1
    assert [k.key for k in store.list("a/")] == ["a/1", "a/2"]
    assert [k.key for k in store.list("a/", limit=1)] == ["a/1"]
    assert store.delete("a/1") is True
    assert store.delete("a/1") is False
    assert [k.key for k in store.list("a/")] == ["a/2"]
    assert store.revision() >= r2


def test_compare_and_swap(store: Store) -> None:
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
    # "Must not exist, then delete it": the condition holds, nothing changes.
    assert store.compare_and_swap("absent", 0, None) is True
    assert store.get("absent") is None


def test_watch_sees_changes_in_order_and_resumes(store: Store) -> None:
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
    t.join(10)
    assert seen == [("put", "w/a", b"1"), ("delete", "w/a", None)]
    # A watcher resuming from an old revision gets the history it missed.
    replay = [(ev.kind, ev.key) for ev in store.watch("w/", start, timeout=0.3)]
    assert replay == [("put", "w/a"), ("delete", "w/a")]


def test_concurrent_compare_and_swap_loses_no_increment(store: Store) -> None:
    def increment(times: int) -> None:
        done = 0
        while done < times:
            kv = store.get("counter")
            current, rev = (int(kv.value), kv.mod_revision) if kv else (0, 0)
            if store.compare_and_swap("counter", rev, str(current + 1).encode()):
                done += 1

    threads = [threading.Thread(target=increment, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(store.get("counter").value) == 100


def test_etcd_lease_keys_disappear_when_revoked(etcd: EtcdServer, tmp_path: Path) -> None:
    store = EtcdStore(etcd.url)
    lease = store.grant_lease(10)
    store.put(f"{tmp_path.name}/node", b"me", lease=lease)
    assert store.keepalive(lease) > 0
    store.revoke_lease(lease)
    assert store.get(f"{tmp_path.name}/node") is None
    assert store.keepalive(lease) == -1


def test_etcd_url_lists_several_endpoints_and_skips_a_dead_one(etcd: EtcdServer) -> None:
    dead = free_port()  # nothing listens there
    store = EtcdStore(f"etcd://127.0.0.1:{dead},127.0.0.1:{etcd.client_port}", timeout=1)
    store.put("multi/k", b"v")
    assert store.get("multi/k").value == b"v"
    assert store.status()["version"]
    store.delete("multi/k")


def test_etcd_unreachable_is_a_store_error() -> None:
    store = EtcdStore(f"etcd://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(StoreError, match="etcd unreachable"):
        store.get("x")


@pytest.mark.parametrize("url", ["etcd://", "etcd://:2379", "http://x:1", "etcd://h:99999"])
def test_bad_etcd_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        parse_etcd_url(url)


def test_etcd_over_tls_with_client_certificates(tmp_path: Path) -> None:
    server = start_etcd(tls=True)
    try:
        tls = server.tls
        assert tls is not None
        store = open_store(server.url, str(tmp_path),
                           EtcdTLS(tls.ca, tls.client_cert, tls.client_key))
        store.put("tls/k", b"secret")
        assert store.get("tls/k").value == b"secret"
        # Without a client certificate the server refuses the client.
        bare = open_store(server.url, str(tmp_path), EtcdTLS(ca_file=tls.ca))
        with pytest.raises(StoreError):
            bare.get("tls/k")
    finally:
        remove_etcd(server)
