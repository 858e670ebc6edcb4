"""The event fan-out: filters, several readers, a slow reader told what it lost."""

from __future__ import annotations

from cilium_py.monitor.hub import QUEUE_SIZE, EventHub, Filter


def drop(src: str, dst: str, ids: tuple[int, int] = (256, 257)) -> dict:
    return {"type": "drop", "source-endpoint": src, "destination-endpoint": dst,
            "src_identity": ids[0], "dst_identity": ids[1]}


def test_filters_by_type_endpoint_side_and_identity() -> None:
    hub = EventHub()
    by_from = hub.subscribe(flt=Filter(from_endpoint="a"))
    by_to = hub.subscribe(flt=Filter(to_endpoint="a"))
    related = hub.subscribe(flt=Filter(related_to="a"))
    by_id = hub.subscribe(flt=Filter(identity=300))
    agent_only = hub.subscribe(flt=Filter(types=frozenset({"agent"})))
    hub.publish(drop("a", "b"))
    hub.publish(drop("b", "a"))
    hub.publish(drop("b", "c", (300, 257)))
    hub.publish({"type": "agent", "message": "endpoint-created", "endpoint": "a"})
    assert by_from.queue.qsize() == 1 and by_to.queue.qsize() == 1
    assert related.queue.qsize() == 3  # a's two flows and the agent event about a
    assert by_id.queue.qsize() == 1
    assert agent_only.queue.get_nowait()["message"] == "endpoint-created"


def test_a_slow_reader_loses_events_for_itself_only_and_is_told_how_many() -> None:
    hub = EventHub()
    slow = hub.subscribe()
    fast = hub.subscribe()
    fast_seen = 0
    for i in range(QUEUE_SIZE + 500):
        hub.publish({"type": "agent", "message": "x", "n": i})
        while not fast.queue.empty():
            fast.queue.get_nowait()
            fast_seen += 1
    assert fast_seen == QUEUE_SIZE + 500 and fast.lost == 0
    stream = slow.events(heartbeat=0.01)
    first = next(stream)
    assert first["type"] == "lost" and first["count"] == 500
    got = [next(stream) for _ in range(QUEUE_SIZE)]
    assert [e["n"] for e in got] == list(range(QUEUE_SIZE))


def test_wanted_types_follow_subscribers() -> None:
    seen: list[frozenset[str]] = []
    hub = EventHub()
    hub.on_wanted_change.append(seen.append)
    trace = hub.subscribe(flt=Filter(types=frozenset({"trace"})))
    assert hub.wanted() == {"trace"}
    hub.unsubscribe(trace)
    assert hub.wanted() == frozenset()
    assert seen == [frozenset({"trace"}), frozenset()]
