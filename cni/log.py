"""Logging for a process that lives a few milliseconds and must keep stdout clean.

stdout belongs to the CNI result, so nothing here ever writes there. Lines go to a
log file (one JSON object per line, like the agent's logs, so one tool reads both) and,
for warnings and errors, to stderr, which runtimes keep in their own logs. The
``logging`` module is not used: importing it costs more than this whole module does.
"""

from __future__ import annotations

import os
import sys
import time

from ..client import codec

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    """Appends to ``path`` (created with its directory on first use) and to stderr."""

    def __init__(self, path: str | None = None, level: str = "info", **context: str) -> None:
        self.path = path
        self.level = LEVELS.get(level, 20)
        self.context = {k: v for k, v in context.items() if v}
        self._fd: int | None = None
        self._failed = False

    def configure(self, path: str | None, level: str, **context: str) -> None:
        """Point the log elsewhere once the network config has been read."""
        if path != self.path:
            self.close()
            self.path, self._failed = path, False
        self.level = LEVELS.get(level, 20)
        self.context.update({k: v for k, v in context.items() if v})

    def _open(self) -> int | None:
        if self._fd is not None or self._failed or not self.path:
            return self._fd
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                self._fd = os.open(self.path, flags, 0o640)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o750, exist_ok=True)
                self._fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            # A read-only /var/log must not fail the container's networking.
            self._failed = True
            print(f"cilium-py-cni: cannot open log file {self.path}: {exc}", file=sys.stderr)
        return self._fd

    def log(self, level: str, msg: str, **fields: object) -> None:
        num = LEVELS[level]
        if num >= LEVELS["warning"]:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"cilium-py-cni {level}: {msg} {extra}".rstrip(), file=sys.stderr)
        if num < self.level:
            return
        fd = self._open()
        if fd is None:
            return
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                  + f".{int(time.time() * 1000) % 1000:03d}Z",
                  "level": level, "logger": "cni", "pid": os.getpid(), "msg": msg,
                  **self.context, **fields}
        # One write() of a whole line with O_APPEND: concurrent execs do not interleave.
        os.write(fd, (codec.dumps(record, default=str) + "\n").encode())

    def debug(self, msg: str, **fields: object) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: object) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: object) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: object) -> None:
        self.log("error", msg, **fields)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
