"""Following a prefix of the shared store, robustly, and acting on changes in batches.

Other nodes change what this node must enforce: a rule imported elsewhere, an identity
allocated elsewhere. A watcher resumes from the last revision it saw, so a dropped
connection loses nothing; when etcd is away it retries, and after an outage it asks
for a full re-read (history may have been compacted meanwhile). Handlers run on one
worker thread, coalesced: a burst of changes costs one regeneration, not one per key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..logs import get_logger
from ..store import Store, StoreError

log = get_logger("node")


class Coalescer:
    """Run ``fn`` on its own thread after ``trigger()``; triggers during a run or within
    ``delay`` seconds of each other make one run."""

    def __init__(self, name: str, fn: Callable[[], None], delay: float = 0.02) -> None:
        self.fn = fn
        self.delay = delay
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        self._pending.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._pending.wait(0.5):
                continue
            self._stop.wait(self.delay)
            self._pending.clear()
            try:
                self.fn()
            except Exception:  # noqa: BLE001 - the handler logs its own failures too
                log.exception("applying changes from the cluster store failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class PrefixWatcher:
    """Call ``on_change`` (coalesced) whenever a key under ``prefix`` changes."""

    def __init__(self, store: Store, prefix: str, on_change: Callable[[], None],
                 retry_seconds: float = 1.0) -> None:
        self.store = store
        self.prefix = prefix
        self.retry_seconds = retry_seconds
        self._apply = Coalescer(f"cpy-apply-{prefix.strip('/').rsplit('/', 1)[-1]}", on_change)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpy-watch", daemon=True)

    def start(self, revision: int) -> None:
        self._revision = revision
        self._thread.start()

    def _loop(self) -> None:
        revision = self._revision
        healthy = True
        while not self._stop.is_set():
            try:
                for ev in self.store.watch(self.prefix, revision, timeout=1.0):
                    revision = max(revision, ev.revision)
                    self._apply.trigger()
                if not healthy:
                    healthy = True
                    self._apply.trigger()  # re-read whole after an outage
            except StoreError as exc:
                if healthy:
                    log.warning("watch of the cluster store failed; retrying",
                                extra={"fields": {"prefix": self.prefix, "error": str(exc)}})
                healthy = False
                self._stop.wait(self.retry_seconds)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._apply.stop()
