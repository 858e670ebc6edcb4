"""Identity allocation in the store: stable numbers, reserved ones fixed, grace-time GC."""

from __future__ import annotations

import threading
from pathlib import Path

from cilium_py.identity import IdentityAllocator
from cilium_py.labels import LabelSet
from cilium_py.store.sqlite import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock | None = None) -> IdentityAllocator:
    return IdentityAllocator(SQLiteStore(str(tmp_path / "s.db")), grace_seconds=60,
                             clock=clock or Clock())


WEB = LabelSet.parse(["container:app=web"])
DB = LabelSet.parse(["container:app=db", "k8s:tier=back"])


def test_same_labels_same_number_and_user_numbers_from_256(tmp_path: Path) -> None:
    ids = make(tmp_path)
    web = ids.allocate(WEB, "ep1")
    assert web >= 256
    assert ids.allocate(WEB, "ep2") == web
    assert ids.allocate(DB, "ep3") not in (web, 0)
    assert ids.lookup(WEB) == web
    assert ids.get(web) == WEB
    assert sorted(ids.users(web)) == ["ep1", "ep2"]


def test_reserved_labels_have_fixed_numbers(tmp_path: Path) -> None:
    ids = make(tmp_path)
    assert ids.allocate(LabelSet.parse(["reserved:init"]), "ep") == 5
    assert ids.allocate(LabelSet.parse(["reserved:host"]), "ep") == 1
    assert {1, 2, 3, 4, 5} <= set(ids.all())


def test_unused_identity_released_only_after_grace(tmp_path: Path) -> None:
    clock = Clock()
    ids = make(tmp_path, clock)
    web = ids.allocate(WEB, "ep1")
    ids.release(web, "ep1")
    clock.now += 30
    assert ids.collect_garbage() == []
    assert ids.allocate(WEB, "ep2") == web, "back within the grace time: same number"
    ids.release(web, "ep2")
    clock.now += 61
    assert ids.collect_garbage() == [web]
    assert ids.get(web) is None and ids.lookup(WEB) is None


def test_identity_in_use_is_never_collected(tmp_path: Path) -> None:
    clock = Clock()
    ids = make(tmp_path, clock)
    web = ids.allocate(WEB, "ep1")
    ids.allocate(WEB, "ep2")
    ids.release(web, "ep1")
    clock.now += 3600
    assert ids.collect_garbage() == []
    assert ids.get(web) == WEB


def test_concurrent_allocation_agrees_on_one_number(tmp_path: Path) -> None:
    ids = make(tmp_path)
    got: list[int] = []
    threads = [threading.Thread(target=lambda i=i: got.append(ids.allocate(WEB, f"ep{i}")))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
    assert len(ids.users(got[0])) == 20
