"""Notices of suppressed drop events: deltas of the kernel's counts, who gets them,
and the line ``cilium-py monitor`` prints."""

from __future__ import annotations

from cilium_py.cli.monitor import format_event
from cilium_py.datapath.events import SuppressionTracker
from cilium_py.monitor.hub import EventHub, Filter


def test_tracker_reports_growth_once_and_restarts_after_an_eviction() -> None:
    t = SuppressionTracker()
    assert [(n["ifindex"], n["count"]) for n in t.update({5: 10, 6: 0})] == [(5, 10)]
    assert t.update({5: 10, 6: 0}) == []  # nothing new: no notice
    assert [(n["ifindex"], n["count"]) for n in t.update({5: 25, 6: 3})] == [(5, 15), (6, 3)]
    assert [n["count"] for n in t.update({5: 4})] == [4]  # entry came back from 0


def test_notices_reach_drop_readers_of_their_endpoint_only() -> None:
    hub = EventHub()
    drops = hub.subscribe(flt=Filter(types=frozenset({"drop"})))
    agent_only = hub.subscribe(flt=Filter(types=frozenset({"agent"})))
    from_a = hub.subscribe(flt=Filter(from_endpoint="a"))
    to_b = hub.subscribe(flt=Filter(to_endpoint="b"))
    by_id = hub.subscribe(flt=Filter(identity=300))
    hub.publish({"type": "drops-suppressed", "endpoint": "a", "identity": 300, "count": 7,
                 "limit_per_second": 100, "ifindex": 9})
    assert drops.queue.get_nowait()["count"] == 7
    assert agent_only.queue.empty() and to_b.queue.empty()
    assert from_a.queue.qsize() == 1 and by_id.queue.qsize() == 1


def test_monitor_prints_the_notice_as_a_line() -> None:
    line = format_event({"type": "drops-suppressed", "endpoint": "web", "count": 2900,
                         "limit_per_second": 100, "time": 0})
    assert "2900 drop events of endpoint web suppressed" in line
    assert "counters are exact" in line
