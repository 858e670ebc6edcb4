"""Socket-level load balancing for the node's own processes (bpf/bpf_sock.c).

Why at the socket: host processes (health checks, a node-local client) never
pass a from_container program, and rewriting the destination once when a socket
connects (or, for unconnected UDP, per datagram sent) costs nothing per packet.
The programs are cgroup sock_addr hooks, attached to one cgroup v2 directory:
every socket of a process in that cgroup or below it is covered (by default the
cgroup v2 root: the whole node); the programs themselves balance only sockets
of the agent's network namespace (``cpy_lb_sock_cfg`` holds its cookie).

Why BPF links, pinned: a link pinned as ``<bpf_root>/cpy_sock_<hook>`` keeps its
program attached when the agent dies (kill -9 included), like the tc filters; a
restarted agent finds the pin, checks in the link's info that it is on the
cgroup it wants, and swaps the program in place (BPF_LINK_UPDATE: the hook never
runs without one). A link also never overrides or blocks anybody else's
programs on the same cgroup, and removing the pins (``cilium-py-agent cleanup``,
or removing ``bpf_root``) once no agent holds them detaches everything.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from . import bpfsys
from .loader import DatapathError, _mount_fstype

log = logging.getLogger("cilium_py.datapath")

CGROUP2_FS_TYPE = "cgroup2"
SO_NETNS_COOKIE = 71  # asm-generic/socket.h (Linux 5.14)
LINK_PREFIX = "cpy_sock_"


@dataclass(frozen=True)
class Hook:
    name: str  # pin suffix and status key
    function: str  # in bpf/bpf_sock.c
    attach_type: int  # enum bpf_attach_type


HOOKS = (
    Hook("connect4", "sock4_connect", 10),
    Hook("connect6", "sock6_connect", 11),
    Hook("sendmsg4", "sock4_sendmsg", 14),
    Hook("sendmsg6", "sock6_sendmsg", 15),
    Hook("recvmsg4", "sock4_recvmsg", 19),
    Hook("recvmsg6", "sock6_recvmsg", 20),
    Hook("getpeername4", "sock4_getpeername", 29),
    Hook("getpeername6", "sock6_getpeername", 30),
)


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where cgroup v2 is mounted (its root as this process sees it), if anywhere."""
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == [CGROUP2_FS_TYPE]:
                return left.split()[4].replace("\\040", " ")
    return None


def resolve_cgroup(setting: str | None) -> str | None:
    """The cgroup directory for a ``--socket-lb-cgroup`` value: None (off), "auto"
    (the cgroup v2 root) or a path, which must be a directory on cgroup2."""
    if setting is None:
        return None
    if setting == "auto":
        path = cgroup2_mount()
        if path is None:
            raise DatapathError("socket LB: no cgroup2 filesystem is mounted (mount one, "
                                "e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`)")
        return path
    path = os.path.realpath(setting)
    if not os.path.isdir(path) or _mount_fstype(path) != CGROUP2_FS_TYPE:
        raise DatapathError(f"socket LB: {setting} is not a cgroup v2 directory")
    return path


def netns_cookie() -> int:
    """The cookie of the calling thread's network namespace (what the programs compare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    return int.from_bytes(raw, "little")


def cgroup_id(path: str) -> int:
    """A cgroup v2 directory's id is its inode number (what link info reports)."""
    return os.stat(path).st_ino


class SocketLB:
    """The socket programs' links under one ``bpf_root``: attach, report, detach."""

    def __init__(self, bpf_root: str) -> None:
        self.bpf_root = bpf_root

    def pin_path(self, hook: Hook) -> str:
        return os.path.join(self.bpf_root, LINK_PREFIX + hook.name)

    def _open_link(self, hook: Hook) -> int | None:
        try:
            return bpfsys.obj_get(self.pin_path(hook))
        except bpfsys.BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise DatapathError(f"{self.pin_path(hook)}: {exc}") from exc

    def attach(self, bpf: Any, cgroup: str, cookie: int, cfg_map: Any) -> dict[str, Any]:
        """Load the socket programs from the compiled module ``bpf`` (bcc) and make
        each hook of ``cgroup`` run them, replacing a previous agent's in place.
        ``cfg_map`` is the pinned ``cpy_lb_sock_cfg``; ``cookie`` the namespace to
        balance. Raises DatapathError (the hooks attached so far stay: a retry or
        ``detach`` settles them)."""
        from bcc import BPF  # only with a datapath, which has bcc

        from .lb import LbSockCfg

        target = cgroup_id(cgroup)
        cfg_map.update(ctypes.c_uint32(0), LbSockCfg(netns_cookie=cookie))
        replaced = created = 0
        try:
            cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise DatapathError(f"socket LB: cannot open {cgroup}: {exc.strerror}") from exc
        try:
            for hook in HOOKS:
                try:
                    fn = bpf.load_func(hook.function, BPF.CGROUP_SOCK_ADDR,
                                       attach_type=hook.attach_type)
                except Exception as exc:
                    raise DatapathError(f"socket LB: loading {hook.function} failed "
                                        f"(verifier?): {exc}") from exc
                if self._replace(hook, fn.fd, target):
                    replaced += 1
                    continue
                try:
                    link = bpfsys.link_create(fn.fd, cg_fd, hook.attach_type)
                except bpfsys.BpfError as exc:
                    raise DatapathError(f"socket LB: attaching {hook.name} to {cgroup}: "
                                        f"{exc}") from exc
                try:
                    bpfsys.obj_pin(link, self.pin_path(hook))
                except bpfsys.BpfError as exc:
                    bpfsys.link_detach(link)
                    raise DatapathError(f"socket LB: pinning {self.pin_path(hook)}: "
                                        f"{exc}") from exc
                finally:
                    os.close(link)
                created += 1
        finally:
            os.close(cg_fd)
        log.info("socket LB attached to %s (%d hooks replaced in place, %d new)", cgroup,
                 replaced, created)
        return {"cgroup": cgroup, "replaced": replaced, "created": created}

    def _replace(self, hook: Hook, prog_fd: int, target: int) -> bool:
        """Put ``prog_fd`` into the pinned link of ``hook`` when that link is on the
        ``target`` cgroup; a link elsewhere (the option changed) is detached."""
        link = self._open_link(hook)
        if link is None:
            return False
        try:
            info = bpfsys.link_info(link)
            if info.cgroup_id == target and info.attach_type == hook.attach_type:
                bpfsys.link_update(link, prog_fd)
                return True
            bpfsys.link_detach(link)
        except bpfsys.BpfError as exc:
            raise DatapathError(f"socket LB: {self.pin_path(hook)}: {exc}") from exc
        finally:
            os.close(link)
        os.unlink(self.pin_path(hook))
        return False

    def detach(self) -> int:
        """Detach every hook pinned under ``bpf_root`` and remove the pins; how many."""
        removed = 0
        for hook in HOOKS:
            link = self._open_link(hook)
            if link is None:
                continue
            try:
                bpfsys.link_detach(link)
            except bpfsys.BpfError as exc:
                raise DatapathError(f"socket LB: detaching {hook.name}: {exc}") from exc
            finally:
                os.close(link)
            os.unlink(self.pin_path(hook))
            removed += 1
        return removed

    def status(self) -> dict[str, dict[str, int]]:
        """Per pinned hook: link id, program id and cgroup id (0: the cgroup is gone)."""
        out: dict[str, dict[str, int]] = {}
        for hook in HOOKS:
            link = self._open_link(hook)
            if link is None:
                continue
            try:
                info = bpfsys.link_info(link)
            except bpfsys.BpfError as exc:
                raise DatapathError(f"socket LB: {self.pin_path(hook)}: {exc}") from exc
            finally:
                os.close(link)
            out[hook.name] = {"link": info.id, "program": info.prog_id,
                              "cgroup-id": info.cgroup_id}
        return out
