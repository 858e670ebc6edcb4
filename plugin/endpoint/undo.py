"""An explicit undo stack for multi-step kernel and store work.

Attaching an endpoint touches IPAM, the store, the identity allocator, netlink and the
BPF maps; any step can fail. Each step that changed something pushes how to take it
back, named, so that a failure unwinds exactly what was done, newest first, and the log
says which undo step failed if one does. ``commit()`` ends the stack's duty once the
work as a whole has succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..logs import get_logger

log = get_logger("endpoint")


class UndoStack:
    """Use as a context manager: leaving it by an exception runs every pushed undo
    (newest first) and re-raises; leaving it after ``commit()`` runs none."""

    def __init__(self, what: str, fields: dict[str, Any] | None = None) -> None:
        self.what = what
        self.fields = dict(fields or {})
        self._steps: list[tuple[str, Callable[[], Any]]] = []
        self._committed = False

    def push(self, name: str, undo: Callable[[], Any]) -> None:
        """Record how to take back a step that has just succeeded."""
        self._steps.append((name, undo))

    @property
    def names(self) -> list[str]:
        """The steps done so far, oldest first (for tests and logs)."""
        return [name for name, _ in self._steps]

    def commit(self) -> None:
        self._committed = True
        self._steps.clear()

    def unwind(self) -> list[str]:
        """Run every undo, newest first; one that fails is logged and the rest still
        run (a half-unwound attach would leak more). Returns the names that failed."""
        failed = []
        while self._steps:
            name, step = self._steps.pop()
            try:
                step()
            except Exception:  # noqa: BLE001 - logged; keep unwinding the rest
                failed.append(name)
                log.exception("undo step failed", extra={"fields": {
                    **self.fields, "work": self.what, "step": name}})
        return failed

    def __enter__(self) -> UndoStack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self._committed:
            self.unwind()
