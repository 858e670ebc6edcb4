"""Network namespaces given as paths: validation, and netlink sockets inside them.

A netlink socket talks to the namespace it was created in, whatever namespace
its user later runs in. So to configure a container we create the socket in a
short-lived thread that has entered the container's namespace with setns(2)
(namespaces are per thread on Linux); the agent's own threads never move. This
avoids pyroute2's ``netns=`` mode, which forks a helper process per socket and
would create a missing namespace (``O_CREAT``) instead of failing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from pyroute2 import IPRoute

from ..errors import InvalidInput
from ..netlink.nlbatch import RtnlSocket

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux >= 4.11
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsHandle:
    """An open, validated network namespace; holding the fd keeps it alive."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_netns(path)
        # Whether interfaces made here start with IPv6 turned off (a runtime's choice);
        # learnt by ``iproute()`` in the same trip into the namespace.
        self.ipv6_off_by_default: bool | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> NetnsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, func: Callable[[], T]) -> T:
        """Call ``func`` in a thread that has entered this namespace."""
        return run_in_netns(self.fd, func)

    def rtnl(self) -> RtnlSocket:
        """A plain rtnetlink socket in this namespace, for ``nlbatch`` batches."""
        fd, self.ipv6_off_by_default = self.run(_netlink_socket_fd)
        return RtnlSocket(fileno=fd)

    def iproute(self) -> IPRoute:
        """An IPRoute whose netlink socket lives in this namespace."""
        fd, self.ipv6_off_by_default = self.run(_netlink_socket_fd)
        return IPRoute(fileno=fd)


def open_netns(path: str) -> int:
    """Open ``path`` and make sure it is a network namespace other than ours.

    InvalidInput names the path when it is missing or not a network namespace
    (for example a stale file under /var/run/netns whose mount is gone).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInput(f"netns must be an absolute path, got {path!r}", {"netns": str(path)})
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput(f"network namespace {path} does not exist", {"netns": path}) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot open network namespace {path}: {exc.strerror}", {"netns": path}
        ) from None
    try:
        _check_is_netns(fd, path)
        own = os.stat("/proc/thread-self/ns/net")
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            raise InvalidInput(
                f"{path} is the agent's own network namespace, not a container's",
                {"netns": path},
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_is_netns(fd: int, path: str) -> None:
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            raise InvalidInput(f"{path} is not a network namespace", {"netns": path}) from None
        raise
    if nstype != CLONE_NEWNET:
        raise InvalidInput(f"{path} is not a network namespace", {"netns": path})


def netns_alive(path: str) -> bool:
    """True when ``path`` still names a network namespace (a container that is gone
    leaves a missing /proc/PID path or an unmounted file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        _check_is_netns(fd, path)
        return True
    except (InvalidInput, OSError):
        return False
    finally:
        os.close(fd)


def run_in_netns(fd: int, func: Callable[[], T]) -> T:
    """Run ``func`` in a fresh thread inside the namespace ``fd``; return its result
    or raise its exception. The thread ends afterwards, so nothing else ever runs
    in a namespace it did not ask for."""
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
            outcome["value"] = func()
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name="cilium-py-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _netlink_socket_fd() -> tuple[int, bool]:
    """A netlink socket of the current namespace, and whether new interfaces here get
    IPv6 turned off (so that attaching skips a second trip when they do not)."""
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", encoding="ascii") as fh:
            ipv6_off = fh.read().strip() != "0"
    except OSError:
        ipv6_off = True  # no IPv6 at all: the per-interface step reports it
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    return sock.detach(), ipv6_off
