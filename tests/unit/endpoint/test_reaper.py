"""The background veth reaper: order of its steps, waiting on it, and draining it."""

from __future__ import annotations

import threading
import time

from cilium_py.endpoint.reaper import LinkReaper


def test_release_runs_only_after_the_delete() -> None:
    reaper = LinkReaper()
    steps: list[str] = []
    gate = threading.Event()

    def delete() -> None:
        gate.wait(5)
        steps.append("delete")

    reaper.submit("lxc1", "ns1", delete, lambda: steps.append("release"))
    time.sleep(0.05)
    assert steps == [] and reaper.pending() == 1
    gate.set()
    assert reaper.drain(5)
    assert steps == ["delete", "release"] and reaper.pending() == 0


def test_wait_for_blocks_on_the_same_name_or_netns_only() -> None:
    reaper = LinkReaper()
    gate = threading.Event()
    reaper.submit("lxc1", "ns1", lambda: gate.wait(5), lambda: None)

    started = time.monotonic()
    reaper.wait_for("lxc2", "ns2")  # unrelated: returns at once
    assert time.monotonic() - started < 0.5

    waited: list[float] = []

    def waiter(name: str, netns: str) -> None:
        t0 = time.monotonic()
        reaper.wait_for(name, netns)
        waited.append(time.monotonic() - t0)

    threads = [threading.Thread(target=waiter, args=args)
               for args in (("lxc1", ""), ("lxc9", "ns1"))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert waited == []  # both still blocked on the pending delete
    gate.set()
    for t in threads:
        t.join(5)
    assert len(waited) == 2 and min(waited) >= 0.15


def test_a_failing_step_is_logged_and_the_queue_goes_on() -> None:
    reaper = LinkReaper()
    done: list[str] = []

    def boom() -> None:
        raise RuntimeError("device busy")

    reaper.submit("lxc1", "ns1", boom, lambda: done.append("release 1"))
    reaper.submit("lxc2", "ns2", lambda: done.append("delete 2"), lambda: done.append("r2"))
    assert reaper.drain(5)
    assert done == ["release 1", "delete 2", "r2"]


def test_drain_times_out_while_a_delete_hangs() -> None:
    reaper = LinkReaper()
    gate = threading.Event()
    reaper.submit("lxc1", "ns1", lambda: gate.wait(5), lambda: None)
    assert reaper.drain(0.1) is False
    gate.set()
    assert reaper.drain(5) is True
