"""One agent per state directory, and a worker that never outlives its master.

Without systemd, a ``kill -9`` of the agent's gunicorn master used to leave its
worker running: it kept the store open and, seconds after a new agent had started,
ran its shutdown and deleted the new agent's rules. Two guards prevent that:

- ``StateLock``: the master takes an exclusive ``flock`` on ``<state-dir>/agent.lock``
  before it binds the socket. The worker inherits the open file (gunicorn forks), and
  a ``flock`` lasts until every process holding the file is gone, so the state stays
  locked while the old master *or* its worker lives. A second agent waits a little
  for an old one winding down, then refuses to start, naming the holder's pid.
- ``die_with_parent``: the worker asks the kernel for SIGKILL when its master dies
  (``PR_SET_PDEATHSIG``). Everything it owns (programs, pinned maps, rules, store) is
  made to survive a kill, so dying at once is safe; a graceful stop still runs the
  worker's shutdown first, because the master waits for its worker.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import time

PR_SET_PDEATHSIG = 1
LOCK_NAME = "agent.lock"


class StateLocked(RuntimeError):
    """Another agent (or what is left of one) holds the state directory."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"the state directory is in use by another agent (pid {holder or 'unknown'}, "
            f"lock {path}); stop it first (an old agent's worker still exiting frees it "
            "within seconds)")
        self.path = path
        self.holder = holder


class StateLock:
    """The exclusive lock of one state directory, held for the process's life."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def acquire(self, wait: float = 10.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; StateLocked if still held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateLocked(self.path, self.holder()) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def held_elsewhere(self) -> bool:
        """True while some process holds the lock (for ``cleanup``)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False


def die_with_parent(expected_parent: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != expected_parent:
        # The master died before the request took effect.
        os.kill(os.getpid(), signal.SIGKILL)
