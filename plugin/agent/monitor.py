"""Fan-out of datapath events to ``cilium-py monitor`` clients.

The datapath calls ``publish`` from its perf-buffer reader thread; each client has a
bounded queue, so a slow client loses events (counted) instead of stalling the reader
or the agent's memory.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

QUEUE_SIZE = 4096


class Subscription:
    def __init__(self, hub: EventHub, types: set[str], endpoint: str | None) -> None:
        self.hub = hub
        self.types = types
        self.endpoint = endpoint
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)
        self.lost = 0

    def wants(self, event: dict[str, Any]) -> bool:
        if self.types and event.get("type") not in self.types:
            return False
        if self.endpoint is not None:
            return self.endpoint in (event.get("endpoint"), event.get("source-endpoint"),
                                     event.get("destination-endpoint"))
        return True

    def events(self, heartbeat: float = 1.0) -> Iterator[dict[str, Any] | None]:
        """Yield events as they come, and None every ``heartbeat`` seconds of silence
        (so the HTTP layer can notice a client that went away)."""
        try:
            while True:
                try:
                    yield self.queue.get(timeout=heartbeat)
                except queue.Empty:
                    yield None
        finally:
            self.hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, types: set[str], endpoint: str | None = None) -> Subscription:
        sub = Subscription(self, types, endpoint)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

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
