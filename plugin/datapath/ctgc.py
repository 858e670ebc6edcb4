"""The agent's conntrack garbage collector.

The BPF programs never delete conntrack entries: an expired entry only stops
matching, and the LRU maps evict their oldest entries when full. Without a
collector a closed connection's entry would hold its slot until the table
overflows (and eviction then picks entries by age, not by expiry). So the agent
walks both tables every ``interval`` seconds (``--conntrack-gc-interval``),
deletes what is past its lifetime, and reports each run: the metrics
``cilium_py_conntrack_gc_runs`` and ``cilium_py_conntrack_gc_deleted_entries``, and
a log line whenever entries were removed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .contract import DatapathContract

log = logging.getLogger("cilium_py.datapath")


class ConntrackGC:
    """A daemon thread that runs ``datapath.gc_ct()`` every ``interval`` seconds."""

    def __init__(self, datapath: DatapathContract, interval: float,
                 report: Callable[[int], None], stopping: threading.Event) -> None:
        if interval <= 0:
            raise ValueError(f"conntrack GC interval must be > 0 seconds, not {interval}")
        self.datapath = datapath
        self.interval = interval
        self.report = report
        self.stopping = stopping
        self.runs = 0
        self.deleted = 0
        self._thread = threading.Thread(target=self._loop, name="cpy-ct-gc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> int:
        """One pass: delete expired entries, report the count, return it."""
        deleted = self.datapath.gc_ct()
        self.runs += 1
        self.deleted += deleted
        self.report(deleted)
        if deleted:
            log.info("conntrack garbage collected", extra={"fields": {
                "deleted": deleted, "runs": self.runs, "deleted-total": self.deleted}})
        return deleted

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the next run retries; logged, not hidden
                log.exception("conntrack garbage collection failed")
