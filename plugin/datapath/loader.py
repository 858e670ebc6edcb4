"""Compile the endpoint programs once and load them, reusing pinned maps.

Why once: per the design ("compile once, configure by maps") the programs are
built when the agent starts, with only node-wide options as -D flags (pin
directory, address families, map sizes, conntrack lifetimes). Per-endpoint
data lives in maps, so attaching an endpoint never compiles.

Why pins survive: every stateful map is declared with bcc's BPF_TABLE_PINNED
under ``bpf_root``. bcc opens an existing pin instead of creating a map, so a
fresh compile after an agent restart works on the very same maps the still-
attached old programs use: no state is lost and nothing is re-populated. bcc
reuses a pin whatever its shape, therefore ``reconcile_pins`` first removes
pins whose type or sizes no longer match (e.g. ``ct_size`` changed); the old
programs keep their (now unpinned) map until they are replaced.

Why the socket programs are in the same compile: ``bpf_sock.c`` (socket-level
load balancing for the node's own processes, socklb.py) shares the service maps
with the packet path. Spliced into the same text it adds nothing measurable to
the compile (below the run-to-run noise of about 1 s on a 2-CPU machine); a
compile unit of its own costs 1.2-1.6 s, since most of a bcc compile is its
fixed part (kernel headers). Its programs are only loaded (verified, a few
milliseconds for all eight) when socket LB is on.

Why sources are assembled here: bcc rewrites map operations (``m.lookup()``)
only in the main file it compiles, not in headers it includes from disk. The
programs include ``lib/*.h`` with quoted includes; ``assemble_source`` splices
them into one text (each header once, in order) before handing it to bcc.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from . import bpfsys
from .maps import MapSpec, map_specs

log = logging.getLogger("cilium_py.datapath")

MAIN_PROGRAM = "bpf_lxc.c"
SOCK_PROGRAM = "bpf_sock.c"
SOURCES = (MAIN_PROGRAM, SOCK_PROGRAM)
PROGRAMS = ("from_container", "to_container", "from_overlay")
BPF_FS_TYPE = "bpf"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")


class DatapathError(RuntimeError):
    """The datapath cannot be built or used (compile, verifier, bpffs, netlink)."""


@dataclass(frozen=True)
class DatapathOptions:
    """Node-wide build options. Changing any of them means a new compile."""

    bpf_root: str
    ipv4: bool = True
    ipv6: bool = True
    ct_size: int = 65536
    endpoint_size: int = 4096
    ct_lifetime_tcp: int = 21600
    ct_lifetime_syn: int = 60
    ct_lifetime_nontcp: int = 60
    ct_lifetime_close: int = 10
    ipcache_size: int = 16384
    policy_size: int = 65536
    ct_accounting: bool = True

    def cflags(self) -> list[str]:
        flags = [
            f'-DCPY_PIN_ROOT="{self.bpf_root}"',
            f"-DCT_MAP_SIZE={self.ct_size}",
            f"-DENDPOINT_MAP_SIZE={self.endpoint_size}",
            f"-DIPCACHE_MAP_SIZE={self.ipcache_size}",
            f"-DPOLICY_MAP_SIZE={self.policy_size}",
            *([] if self.ct_accounting else ["-DCT_ACCOUNTING=0"]),
            f"-DCT_LIFETIME_TCP={self.ct_lifetime_tcp}",
            f"-DCT_LIFETIME_SYN={self.ct_lifetime_syn}",
            f"-DCT_LIFETIME_NONTCP={self.ct_lifetime_nontcp}",
            f"-DCT_LIFETIME_CLOSE={self.ct_lifetime_close}",
        ]
        if self.ipv4:
            flags.append("-DENABLE_IPV4")
        if self.ipv6:
            flags.append("-DENABLE_IPV6")
        return flags

    def specs(self) -> dict[str, MapSpec]:
        return map_specs(self.ct_size, self.endpoint_size, self.ipcache_size, self.policy_size)


@dataclass
class LoadedPrograms:
    """A compiled bcc module and its two loaded programs (fd, name, kernel id)."""

    bpf: Any  # bcc.BPF
    fds: dict[str, int]
    prog_ids: dict[str, int]
    compile_seconds: float
    replaced_pins: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Release our fds; attached programs and pinned maps stay alive in the kernel."""
        self.bpf.cleanup()


def bpf_sources() -> Traversable:
    """The installed ``cilium_py.bpf`` package data (bpf/ in the source tree)."""
    return resources.files("cilium_py.bpf")


def assemble_source(*mains: str, root: Traversable | None = None) -> str:
    """The ``mains`` (default: every program source) one after the other, with our
    quoted includes spliced in, each header once in the whole text."""
    root = root or bpf_sources()
    seen: set[str] = set()

    def splice(rel: str) -> str:
        out: list[str] = []
        for line in root.joinpath(rel).read_text().splitlines(keepends=True):
            match = _INCLUDE.match(line)
            if match is None:
                out.append(line)
                continue
            inc = match.group(1)
            if inc not in seen:
                seen.add(inc)
                out.append(f"/* ---- {inc} ---- */\n")
                out.append(splice(inc))
                out.append(f"/* ---- end {inc} ---- */\n")
        return "".join(out)

    return "".join(splice(main) for main in (mains or SOURCES))


def _mount_fstype(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Filesystem type of the mount that holds ``path`` (longest mount point prefix)."""
    best, fstype = "", None
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4].replace("\\040", " ")
            if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) and len(
                mount_point
            ) >= len(best):
                best, fstype = mount_point, right.split()[0]
    return fstype


def check_bpf_root(bpf_root: str) -> None:
    """``bpf_root`` must be a plain absolute path on a BPF filesystem (pins need it)."""
    if not _SAFE_PATH.match(bpf_root) or "/../" in bpf_root + "/":
        raise DatapathError(f"bpf_root must be a plain absolute path, got {bpf_root!r}")
    fstype = _mount_fstype(os.path.realpath(bpf_root))
    if fstype != BPF_FS_TYPE:
        raise DatapathError(
            f"{bpf_root} is on a {fstype or 'unknown'} filesystem, not bpffs: pinned maps "
            "would not survive the agent. Mount bpffs (`mount -t bpf bpf /sys/fs/bpf`). "
            "Note that `ip netns exec` remounts /sys and hides /sys/fs/bpf; enter a "
            "namespace with `nsenter --net=/run/netns/NAME` (or setns) instead."
        )


def reconcile_pins(bpf_root: str, specs: dict[str, MapSpec]) -> list[str]:
    """Unpin maps whose shape no longer matches the programs; return their names."""
    replaced: list[str] = []
    for name, spec in specs.items():
        path = os.path.join(bpf_root, name)
        if not os.path.exists(path):
            continue
        try:
            fd = bpfsys.obj_get(path)
        except bpfsys.BpfError as exc:
            raise DatapathError(f"{path} exists but is not a BPF object: {exc}") from exc
        try:
            info = bpfsys.map_info(fd)
        finally:
            os.close(fd)
        if not spec.matches(info):
            log.warning(
                "pinned map %s has another layout (type %d key %d value %d max %d); "
                "replacing it, its entries are lost",
                path, info.type, info.key_size, info.value_size, info.max_entries,
            )
            os.unlink(path)
            replaced.append(name)
    return replaced


def compile_and_load(options: DatapathOptions) -> LoadedPrograms:
    """Compile the programs once, reuse/create the pinned maps, load the tc programs
    (the socket programs wait for ``socklb.SocketLB.attach``)."""
    check_bpf_root(options.bpf_root)
    os.makedirs(options.bpf_root, exist_ok=True)
    replaced = reconcile_pins(options.bpf_root, options.specs())

    from bcc import BPF  # heavy (LLVM) and needs root: only when the datapath starts

    started = time.monotonic()
    try:
        bpf = BPF(text=assemble_source(*SOURCES), cflags=options.cflags())
    except Exception as exc:
        raise DatapathError(f"compiling {MAIN_PROGRAM} failed: {exc}") from exc
    try:
        fds: dict[str, int] = {}
        ids: dict[str, int] = {}
        for name in PROGRAMS:
            fn = bpf.load_func(name, BPF.SCHED_CLS)
            fds[name] = fn.fd
            ids[name] = bpfsys.prog_id(fn.fd)
    except Exception as exc:
        bpf.cleanup()
        raise DatapathError(f"loading {MAIN_PROGRAM} failed (verifier?): {exc}") from exc
    elapsed = time.monotonic() - started
    log.info("compiled and loaded %s in %.2fs (pins under %s)", MAIN_PROGRAM, elapsed,
             options.bpf_root)
    return LoadedPrograms(bpf=bpf, fds=fds, prog_ids=ids, compile_seconds=elapsed,
                          replaced_pins=replaced)
