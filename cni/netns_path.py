"""CNI_NETNS checks for CHECK: a network namespace, and the one the agent used.

Runtimes pass namespaces as paths of every kind (``/var/run/netns/x``,
``/proc/PID/ns/net``, Mesos' bind-mounted ``.../ns``); two paths name the same
namespace when they stat to the same nsfs inode. Only ``os`` and ``fcntl`` (a small
built-in) are imported: every exec pays for its imports.
"""

from __future__ import annotations

import fcntl
import os

from .errors import INVALID_ENV, CNIError

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux >= 4.11
CLONE_NEWNET = 0x40000000


def require_netns(path: str) -> os.stat_result:
    """The namespace's stat, or code 4 (invalid environment) naming what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CNIError(INVALID_ENV, f"CNI_NETNS {path} does not exist") from None
    except OSError as exc:
        raise CNIError(INVALID_ENV, f"CNI_NETNS {path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = -1
        if kind != CLONE_NEWNET:
            raise CNIError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
        return os.fstat(fd)
    finally:
        os.close(fd)


def same_netns(runtime: os.stat_result, other_path: str) -> bool:
    try:
        other = os.stat(other_path)
    except OSError:
        return False
    return (runtime.st_dev, runtime.st_ino) == (other.st_dev, other.st_ino)
