"""Run a :class:`~.proxy.KafkaProxy` on its own event loop thread.

The agent is a threaded WSGI process; the proxy is asyncio. It gets a loop of its own
in a daemon thread, and the agent talks to it with thread-safe calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .proxy import KafkaProxy

T = TypeVar("T")


class ProxyThread:
    """Owns a loop thread and the proxy on it; ``start``/``stop`` from any thread."""

    def __init__(self, proxy: KafkaProxy, name: str = "kafka-proxy") -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> ProxyThread:
        self._thread.start()
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def listen(self, host: str, port: int = 0, **kwargs: Any) -> tuple[str, int]:
        return self.call(self.proxy.listen(host, port, **kwargs))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
