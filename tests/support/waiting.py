"""Waiting for state the agent reaches shortly after answering (deleted endpoints'
veths and addresses go in its background reaper, see plugin/endpoint/reaper.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Return ``check()``'s first truthy value; fail naming the last one after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s (last: {value!r})")
        time.sleep(interval)


def poll(check: Callable[[], T], timeout: float = 3.0, interval: float = 0.05) -> T:
    """``check()``'s first truthy value, or its last value after ``timeout`` seconds
    (for asserts that want to show what was there instead)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
