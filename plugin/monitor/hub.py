"""Fan-out of events to ``cilium-py monitor`` clients.

Sources publish here from their own threads: the datapath's perf-buffer reader (drops,
traces, policy verdicts), the proxies (L7 records) and the agent itself (endpoint and
policy lifecycle). Each client has a bounded queue, so a slow client loses events
instead of stalling the reader or the agent's memory; it is told how many it lost, in
the stream, as soon as it catches up. Clients filter on the agent's side (type,
source/destination endpoint, either, identity), so events nobody wants cost one check.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 4096

# Notices about events of another type that were not sent: a client wanting that
# type (or every type) gets them. The datapath sends at most so many drop events
# a second per endpoint and then says how many it suppressed.
NOTICES = {"drops-suppressed": "drop"}


@dataclass(frozen=True)
class Filter:
    types: frozenset[str] = frozenset()
    from_endpoint: str | None = None
    to_endpoint: str | None = None
    related_to: str | None = None
    identity: int | None = None

    def wants(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        notice_of = NOTICES.get(kind)  # type: ignore[arg-type]
        if self.types and kind not in self.types and notice_of not in self.types:
            return False
        src = event.get("source-endpoint")
        dst = event.get("destination-endpoint")
        if notice_of is not None:  # the suppressed events were from or to its endpoint
            src = dst = event.get("endpoint")
        if self.from_endpoint is not None and src != self.from_endpoint:
            return False
        if self.to_endpoint is not None and dst != self.to_endpoint:
            return False
        if self.related_to is not None and self.related_to not in (
                src, dst, event.get("endpoint")):
            return False
        if self.identity is not None and self.identity not in (
                event.get("src_identity"), event.get("dst_identity"),
                event.get("source-identity"), event.get("destination-identity"),
                event.get("identity")):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"type": sorted(self.types), "from": self.from_endpoint, "to": self.to_endpoint,
                "related-to": self.related_to, "identity": self.identity}


class Subscription:
    def __init__(self, hub: EventHub, flt: Filter) -> None:
        self.hub = hub
        self.filter = flt
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)
        self.lost = 0
        self._reported = 0

    @property
    def types(self) -> frozenset[str]:
        return self.filter.types

    def wants(self, event: dict[str, Any]) -> bool:
        return self.filter.wants(event)

    def events(self, heartbeat: float = 1.0) -> Iterator[dict[str, Any] | None]:
        """Yield events as they come, a ``lost`` notice when some were dropped for
        this client, and None every ``heartbeat`` seconds of silence (so the HTTP
        layer can notice a client that went away)."""
        try:
            while True:
                if self.lost > self._reported:
                    lost, self._reported = self.lost - self._reported, self.lost
                    yield {"type": "lost", "time": time.time(), "count": lost,
                           "message": f"{lost} events dropped: this monitor read too slowly"}
                try:
                    yield self.queue.get(timeout=heartbeat)
                except queue.Empty:
                    yield None
        finally:
            self.hub.unsubscribe(self)


@dataclass
class EventHub:
    """Subscribers, and callbacks told when the set of wanted types changes (the
    datapath emits trace and verdict events only while someone wants them)."""

    _subs: list[Subscription] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    published: int = 0
    on_wanted_change: list[Callable[[frozenset[str]], None]] = field(default_factory=list)

    def subscribe(self, types: set[str] | frozenset[str] = frozenset(),
                  endpoint: str | None = None, flt: Filter | None = None) -> Subscription:
        sub = Subscription(self, flt or Filter(frozenset(types), related_to=endpoint))
        with self._lock:
            self._subs.append(sub)
        self._wanted_changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.remove(sub)
        self._wanted_changed()

    def wanted(self) -> frozenset[str]:
        """Event types some subscriber wants ("*" when one wants every type)."""
        with self._lock:
            subs = list(self._subs)
        out: set[str] = set()
        for sub in subs:
            out |= sub.types or {"*"}
        return frozenset(out)

    def _wanted_changed(self) -> None:
        wanted = self.wanted()
        for callback in list(self.on_wanted_change):
            callback(wanted)

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("time", time.time())
        self.published += 1
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.wants(event):
                try:
                    sub.queue.put_nowait(event)
                except queue.Full:
                    sub.lost += 1
