"""Thin ctypes wrapper around the bpf(2) system call.

Why not go through bcc for map access? bcc only hands out maps that it compiled
itself. The agent must also read pinned maps *before* it compiles (to check that a
pinned map still has the layout the new programs expect), and tools such as the
CLI or the tests may want to read them without paying for a compile. The
handful of commands used here (object pin/get, info by fd, element lookup,
update, delete and iteration) have a stable ABI, so a few lines of ctypes are
enough and keep that code independent of bcc.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import dataclass

_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_ENABLE_STATS = 32
BPF_LINK_DETACH = 34

BPF_STATS_RUN_TIME = 0

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# Map types used by the datapath (enum bpf_map_type in uapi/linux/bpf.h).
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11

BPF_F_NO_PREALLOC = 0x1

BPF_LINK_TYPE_CGROUP = 3

PERCPU_TYPES = frozenset({BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed; ``errno`` tells why (ENOENT for a missing key...)."""


class _Attr(ctypes.Structure):
    # union bpf_attr is larger than anything used here; the kernel requires the
    # bytes it does not know about to be zero, which a fresh buffer guarantees.
    _fields_ = [("raw", ctypes.c_uint8 * 128)]


def _syscall_nr() -> int:
    machine = platform.machine()
    try:
        return _NR_BPF[machine]
    except KeyError as exc:  # pragma: no cover - depends on the machine
        raise BpfError(errno.ENOSYS, f"bpf(2) number unknown for {machine}") from exc


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_syscall_nr(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf cmd {cmd}: {os.strerror(err)}")
    return int(ret)


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 96),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 112),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 112),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 128),
    ]


class _ProgInfo(ctypes.Structure):
    # struct bpf_prog_info up to run_cnt; the fields in between are not used here.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("middle", ctypes.c_uint8 * 176),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 48),
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 112),
    ]


class _LinkUpdateAttr(ctypes.Structure):
    _fields_ = [
        ("link_fd", ctypes.c_uint32),
        ("new_prog_fd", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("old_prog_fd", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 112),
    ]


class _LinkInfo(ctypes.Structure):
    # struct bpf_link_info with the union read as its cgroup member.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("attach_type", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 60),
    ]


class _StatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("rest", ctypes.c_uint8 * 124)]


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says about a map: enough to tell whether a pin is reusable."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def obj_get(path: str) -> int:
    """Open a pinned object; the caller owns (and must close) the returned fd."""
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(cpath))
    return _bpf(BPF_OBJ_GET, attr)


def obj_pin(fd: int, path: str) -> None:
    """Pin an object so that it outlives every fd (and process) that refers to it."""
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(cpath), bpf_fd=fd)
    _bpf(BPF_OBJ_PIN, attr)


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return MapInfo(
        type=info.type,
        id=info.id,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        name=info.name.decode(errors="replace"),
    )


def prog_id(fd: int) -> int:
    """Kernel id of a loaded program: what tc reports for an attached filter."""
    info = _ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return int(info.id)


@dataclass(frozen=True)
class ProgStats:
    """Run count and total run time of a program; both stay 0 unless statistics
    are enabled (``enable_stats`` or the kernel.bpf_stats_enabled sysctl)."""

    run_cnt: int
    run_time_ns: int

    @property
    def ns_per_run(self) -> float:
        return self.run_time_ns / self.run_cnt if self.run_cnt else 0.0


def prog_stats(fd: int) -> ProgStats:
    info = _ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return ProgStats(run_cnt=int(info.run_cnt), run_time_ns=int(info.run_time_ns))


def enable_stats() -> int:
    """Turn on per-program run time accounting for as long as the returned fd is
    open (close it to turn it off again): unlike the sysctl, it cannot be left on
    by a crashed benchmark."""
    return _bpf(BPF_ENABLE_STATS, _StatsAttr(type=BPF_STATS_RUN_TIME))


@dataclass(frozen=True)
class LinkInfo:
    """A BPF link as the kernel describes it; ``cgroup_id`` and ``attach_type`` are
    meaningful for cgroup links only (``cgroup_id`` 0: the cgroup is gone)."""

    type: int
    id: int
    prog_id: int
    cgroup_id: int
    attach_type: int


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """Attach a program through a new link (returned fd). The attachment lasts as long
    as the link does: while an fd or a pin refers to it, or until ``link_detach``."""
    return _bpf(BPF_LINK_CREATE, _LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd,
                                                 attach_type=attach_type))


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the link's program atomically: the hook never runs without one."""
    _bpf(BPF_LINK_UPDATE, _LinkUpdateAttr(link_fd=link_fd, new_prog_fd=new_prog_fd))


def link_detach(link_fd: int) -> None:
    """Detach now, whoever else still holds the link (it stays, defunct, until freed)."""
    _bpf(BPF_LINK_DETACH, _LinkUpdateAttr(link_fd=link_fd))


def link_info(fd: int) -> LinkInfo:
    info = _LinkInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return LinkInfo(type=int(info.type), id=int(info.id), prog_id=int(info.prog_id),
                    cgroup_id=int(info.cgroup_id), attach_type=int(info.attach_type))


def map_lookup(fd: int, key: ctypes.Array | ctypes.Structure, value: ctypes._CData) -> bool:
    """Fill ``value`` for ``key``; False when the key is absent."""
    attr = _ElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
    attr = _ElemAttr(
        map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value), flags=flags
    )
    _bpf(BPF_MAP_UPDATE_ELEM, attr)


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """Delete ``key``; False when it was already gone (deletes are idempotent)."""
    attr = _ElemAttr(map_fd=fd, key=ctypes.addressof(key))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, attr)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_next_key(fd: int, key: ctypes._CData | None, next_key: ctypes._CData) -> bool:
    """Store the key after ``key`` (the first key when None); False at the end."""
    attr = _ElemAttr(
        map_fd=fd,
        key=0 if key is None else ctypes.addressof(key),
        value=ctypes.addressof(next_key),
    )
    try:
        _bpf(BPF_MAP_GET_NEXT_KEY, attr)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values hold one slot for each."""
    with open("/sys/devices/system/cpu/possible", encoding="ascii") as fh:
        spec = fh.read().strip()
    count = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) if hi else int(lo)) - int(lo) + 1
    return count
