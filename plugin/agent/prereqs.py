"""Start-up checks: fail at once with what to do, never half-start.

Each check returns a ``Check``; the agent refuses to start while any is failing and
``/v1/healthz`` reports the same checks later. Paths are parameters so the checks can
be exercised against fake trees in unit tests.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import sys
from dataclasses import dataclass

BPF_FS_MAGIC = 0xCAFE4A11
CLONE_NEWNET = 0x40000000


@dataclass
class Check:
    name: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "failure", "message": self.message}


def check_root(euid: int | None = None) -> Check:
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return Check(
            "root",
            False,
            "cilium-py-agent must run as root: it creates network devices and loads BPF "
            "programs; start it with sudo or as a systemd service",
        )
    return Check("root", True, "running as root")


def _mount_types(proc_mounts: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(proc_mounts, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    out[parts[1]] = parts[2]
    except OSError:
        pass
    return out


def check_bpffs(bpf_root: str, proc_mounts: str = "/proc/mounts") -> Check:
    mounts = _mount_types(proc_mounts)
    path = os.path.abspath(bpf_root)
    while True:
        if path in mounts:
            if mounts[path] == "bpf":
                return Check("bpf-filesystem", True, f"BPF filesystem mounted at {path}")
            break
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return Check(
        "bpf-filesystem",
        False,
        f"no BPF filesystem under {bpf_root}: mount it with "
        "`mount -t bpf bpf /sys/fs/bpf` (or add it to /etc/fstab), or point --bpf-root "
        "at a directory on a mounted BPF filesystem",
    )


def _kernel_config(config_gz: str) -> dict[str, str] | None:
    try:
        with gzip.open(config_gz, "rt", encoding="utf-8") as fh:
            pairs = (line.strip().split("=", 1) for line in fh if line.startswith("CONFIG_"))
            return {k: v for k, v in pairs}
    except OSError:
        return None


def _probe_clsact() -> bool:
    """Add a clsact qdisc to a veth in a throwaway network namespace.

    Forking keeps the unshare away from the agent's own namespace; a veth rather than
    a dummy device because some kernels (this project's CI among them) lack dummy.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) == 0:
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    ipr.link("add", ifname="cpyprobe0", kind="veth", peer="cpyprobe1")
                    idx = ipr.link_lookup(ifname="cpyprobe0")[0]
                    ipr.tc("add", "clsact", idx)
                    code = 0
        except Exception:  # noqa: BLE001 - any failure means "not available"
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def check_tc(config_gz: str = "/proc/config.gz", probe: bool = True) -> Check:
    cfg = _kernel_config(config_gz)
    if cfg is not None:
        missing = [
            opt
            for opt in ("CONFIG_NET_SCH_INGRESS", "CONFIG_NET_CLS_BPF", "CONFIG_NET_CLS_ACT")
            if cfg.get(opt) not in ("y", "m")
        ]
        if missing:
            return Check(
                "tc-bpf",
                False,
                f"the kernel lacks {', '.join(missing)} (clsact qdisc / cls_bpf): "
                "use a kernel built with them (Debian's stock kernels have them)",
            )
    if probe and not _probe_clsact():
        return Check(
            "tc-bpf",
            False,
            "cannot add a clsact qdisc: load the sch_ingress and cls_bpf modules "
            "(`modprobe sch_ingress cls_bpf`) or use a kernel that has them",
        )
    return Check("tc-bpf", True, "clsact qdisc and cls_bpf available")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return Check(
            "bcc",
            False,
            f"bcc is not importable from {sys.executable}: install Debian's python3-bpfcc "
            "(`apt-get install python3-bpfcc`) and run packaging/install.sh, which makes it "
            "importable from the cilium-py virtualenv",
        )
    return Check("bcc", True, "bcc importable")


def check_kernel_headers(release: str | None = None, modules_dir: str = "/lib/modules") -> Check:
    release = release or platform.release()
    build = os.path.join(modules_dir, release, "build")
    if not os.path.isdir(os.path.join(build, "include")):
        return Check(
            "kernel-headers",
            False,
            f"kernel headers for {release} not found at {build}: install "
            f"linux-headers-{release}, or, when the running kernel has no packaged headers, "
            "run `packaging/install.sh --link-headers` to point bcc at the installed Debian "
            "linux-headers",
        )
    return Check("kernel-headers", True, f"kernel headers at {os.path.realpath(build)}")


def run_all(bpf_root: str) -> list[Check]:
    checks = [check_root()]
    if not checks[0].ok:
        return checks
    return checks + [check_bpffs(bpf_root), check_tc(), check_bcc(), check_kernel_headers()]
