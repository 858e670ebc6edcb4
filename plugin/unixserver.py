"""Serving a WSGI app with gunicorn on a unix socket: the agent's API and the Docker driver.

One worker process with threads: the worker *is* the service (the agent owns the store
handle, the datapath and in-memory caches; the driver its state file and lock), so state
is never split between processes. The master only supervises; if the worker dies it is
restarted and restores its state, like any restart.

Why a module of its own: the agent (``agent/server.py``) and the Docker driver
(``docker/server.py``) both serve this way and differ only in a few settings; kept here,
neither package imports the other for it.
"""

from __future__ import annotations

import logging
import os
import selectors
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers.gthread import ThreadWorker

from .logs import get_logger

log = get_logger("server")


class _QuietGunicornLogger(GunicornLogger):
    """Keep gunicorn's messages in our structured handler instead of its own."""

    def setup(self, cfg: Any) -> None:  # noqa: D401 - gunicorn hook
        ours = list(logging.getLogger("gunicorn.error").handlers)
        super().setup(cfg)
        if ours:
            self.error_log.handlers[:] = ours
            self.error_log.propagate = False


class PromptStopWorker(ThreadWorker):
    """The gthread worker, but a SIGTERM ends its poll loop at once.

    Stock gthread only looks at its ``alive`` flag when its 1 s poll times out, so every
    stop (and every restart) of the agent or the driver waited up to a second for
    nothing. The signal handler writes to a pipe the poll loop watches.
    """

    _wake: tuple[int, int] | None = None

    def run(self) -> None:
        self._wake = os.pipe()
        for fd in self._wake:
            os.set_blocking(fd, False)
        self.poller.register(self._wake[0], selectors.EVENT_READ, self._drain)
        super().run()

    def _drain(self, fd: int) -> None:
        try:
            os.read(fd, 64)
        except BlockingIOError:
            pass

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except BlockingIOError:  # already woken
                pass


class UnixSocketServer(BaseApplication):
    """gunicorn master + one gthread worker bound to ``socket_path``.

    Subclasses set the settings that differ between services as class attributes.
    """

    proc_name = "cilium-py"
    umask = 0o117  # socket mode 0660
    timeout = 120

    def __init__(
        self,
        app_factory: Callable[[], Any],
        socket_path: str,
        threads: int,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._factory = app_factory
        self._socket = socket_path
        self._threads = threads
        self._on_exit = on_exit
        super().__init__()

    def load_config(self) -> None:
        on_exit = self._on_exit

        def worker_exit(server: Any, worker: Any) -> None:
            if on_exit is not None:
                on_exit()

        settings = {
            "bind": f"unix:{self._socket}",
            "workers": 1,
            "worker_class": PromptStopWorker,
            "threads": self._threads,
            "umask": self.umask,
            "timeout": self.timeout,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "logger_class": _QuietGunicornLogger,
            "proc_name": self.proc_name,
            "worker_exit": worker_exit,
            "preload_app": False,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._factory()

