"""Retrying failed regenerations with back-off.

An endpoint whose policy could not be written is left denying and ``not-ready``; the
cause (a full map, a kernel refusal) may go away (a rule deleted, an endpoint gone), so
the agent tries again: after 1 s, then 2, 4, ... up to a minute between tries, for as
long as the endpoint exists. One thread serves every endpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..logs import get_logger

log = get_logger("policy")


@dataclass
class Pending:
    attempts: int
    due: float
    reason: str


class RegenerationRetry:
    """``retry(ep_id)`` returns True when the endpoint is done with (regenerated, or
    gone); False schedules the next try further out."""

    def __init__(self, retry: Callable[[str], bool], *, first: float = 1.0,
                 cap: float = 60.0) -> None:
        self._retry = retry
        self.first, self.cap = first, cap
        self._pending: dict[str, Pending] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def delay(self, attempts: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, attempts - 1))

    def schedule(self, ep_id: str, reason: str) -> float:
        """Count one more failure of ``ep_id``; returns the seconds until its retry."""
        with self._cond:
            prev = self._pending.get(ep_id)
            attempts = prev.attempts + 1 if prev else 1
            wait = self.delay(attempts)
            self._pending[ep_id] = Pending(attempts, time.monotonic() + wait, reason)
            self._cond.notify_all()
        return wait

    def clear(self, ep_id: str) -> None:
        with self._cond:
            self._pending.pop(ep_id, None)

    def pending(self) -> dict[str, dict[str, object]]:
        """By endpoint id: attempts so far, seconds to the next try, the last reason."""
        now = time.monotonic()
        with self._cond:
            return {k: {"attempts": p.attempts, "next-try-seconds": round(max(0, p.due - now), 1),
                        "reason": p.reason} for k, p in self._pending.items()}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cpy-regen-retry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _due(self) -> list[str]:
        now = time.monotonic()
        return [k for k, p in self._pending.items() if p.due <= now]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._due():
                    soonest = min((p.due for p in self._pending.values()), default=None)
                    self._cond.wait(None if soonest is None else
                                    max(0.05, soonest - time.monotonic()))
                if self._stopping:
                    return
                due = self._due()
            for ep_id in due:
                try:
                    done = self._retry(ep_id)
                except Exception as exc:  # noqa: BLE001 - counted, logged, tried again
                    log.exception("regeneration retry failed", extra={"fields": {"id": ep_id}})
                    self.schedule(ep_id, str(exc))
                    continue
                if done:
                    self.clear(ep_id)
                    continue
                with self._cond:
                    still = self._pending.get(ep_id)
                if still is not None and still.due <= time.monotonic():
                    # The failure path did not reschedule it: do, or this spins.
                    self.schedule(ep_id, still.reason)
