"""Collecting the report: the agent's view over its API, the kernel's view by commands.

Everything is best effort and nothing stops the collection: when the agent is down the
archive still has the kernel's side (links, routes, tc filters, netfilter rules, pinned
maps by bpftool when installed) and the logs, and each item that failed says why in its
own file. Each command runs with a timeout, so a hung tool cannot hang the report.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .redact import redact

# The agent's API: file name -> path.
API_ITEMS = {
    "status.json": "/v1/healthz",
    "config.json": "/v1/config",
    "endpoints.json": "/v1/endpoint",
    "identities.json": "/v1/identity",
    "policy.json": "/v1/policy",
    "ipam.json": "/v1/ipam",
    "nodes.json": "/v1/node",
    "services.json": "/v1/service",
    "bpf/endpoints.json": "/v1/bpf/endpoint",
    "bpf/ipcache.json": "/v1/bpf/ipcache",
    "bpf/conntrack.json": "/v1/bpf/ct",
    "bpf/drops.json": "/v1/bpf/drops",
    "bpf/metrics.json": "/v1/bpf/metrics",
    "bpf/tunnel.json": "/v1/bpf/tunnel",
}

# The kernel's and the host's side: file name -> command.
COMMANDS = {
    "kernel/uname.txt": ["uname", "-a"],
    "kernel/ip-addr.txt": ["ip", "-d", "addr"],
    "kernel/ip-link.txt": ["ip", "-d", "-s", "link"],
    "kernel/ip-route.txt": ["ip", "route", "show", "table", "all"],
    "kernel/ip-6-route.txt": ["ip", "-6", "route", "show", "table", "all"],
    "kernel/ip-rule.txt": ["ip", "rule"],
    "kernel/ip-6-rule.txt": ["ip", "-6", "rule"],
    "kernel/ip-neigh.txt": ["ip", "neigh"],
    "kernel/iptables-save.txt": ["iptables-save"],
    "kernel/ip6tables-save.txt": ["ip6tables-save"],
    "kernel/bpftool-prog.txt": ["bpftool", "prog", "show"],
    "kernel/bpftool-map.txt": ["bpftool", "map", "show"],
    "kernel/mounts.txt": ["cat", "/proc/mounts"],
}

KERNEL_OPTIONS = (
    "CONFIG_BPF", "CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_NET_CLS_BPF",
    "CONFIG_NET_CLS_ACT", "CONFIG_NET_SCH_INGRESS", "CONFIG_VXLAN", "CONFIG_VETH",
    "CONFIG_NETFILTER_XT_TARGET_TPROXY", "CONFIG_NETFILTER_XT_MATCH_SOCKET",
    "CONFIG_NF_NAT", "CONFIG_BPF_STREAM_PARSER", "CONFIG_CGROUP_BPF",
)

LOG_FILES = ("/var/log/cilium-py/agent.log", "/var/log/cilium-py/docker.log")
MAX_LOG_BYTES = 5 * 1024 * 1024  # the tail of each log


@dataclass
class Collector:
    """Gathers files in memory; ``api`` is a callable (path) -> JSON or raises."""

    api: Callable[[str], Any] | None
    metrics_url: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> None:
        self.files[name] = redact(text).encode()

    def collect(self) -> None:
        self.add("summary.txt", self._summary())
        self._api_items()
        self._commands()
        self._tc_filters()
        self._kernel_config()
        self._logs()
        self._metrics()
        if self.errors:
            self.add("errors.txt", "".join(f"{k}: {v}\n" for k, v in sorted(self.errors.items())))

    def _summary(self) -> str:
        from .. import __version__

        return (f"cilium-py bugtool\nversion: {__version__}\n"
                f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                f"kernel: {platform.release()}\nmachine: {platform.machine()}\n"
                f"python: {platform.python_version()}\n")

    def _api_items(self) -> None:
        if self.api is None:
            self.errors.setdefault("agent", "no agent client")
            return
        for name, path in API_ITEMS.items():
            try:
                self.add(f"agent/{name}", json.dumps(self.api(path), indent=2, sort_keys=True))
            except Exception as exc:  # noqa: BLE001 - the report goes on without it
                self.errors[f"agent/{name}"] = str(exc)

    def _run(self, name: str, argv: list[str]) -> str | None:
        if shutil.which(argv[0]) is None:
            self.errors[name] = f"{argv[0]} is not installed"
            return None
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.errors[name] = str(exc)
            return None
        if res.returncode != 0:
            self.errors[name] = f"exit {res.returncode}: {res.stderr.strip()[:500]}"
        return res.stdout

    def _commands(self) -> None:
        for name, argv in COMMANDS.items():
            out = self._run(name, argv)
            if out is not None:
                self.add(name, out)

    def _tc_filters(self) -> None:
        """tc filters of every device that has a clsact qdisc (endpoint veths and more)."""
        out = self._run("kernel/tc-qdisc.txt", ["tc", "qdisc", "show"])
        if out is None:
            return
        self.add("kernel/tc-qdisc.txt", out)
        devices = sorted({line.split()[4] for line in out.splitlines()
                          if line.startswith("qdisc clsact") and len(line.split()) > 4})
        chunks = []
        for dev in devices:
            for hook in ("ingress", "egress"):
                text = self._run(f"tc filter {dev} {hook}", ["tc", "filter", "show", "dev", dev,
                                                             hook]) or ""
                chunks.append(f"== {dev} {hook}\n{text}")
        self.add("kernel/tc-filters.txt", "\n".join(chunks))

    def _kernel_config(self) -> None:
        release = platform.release()
        text = None
        for path in (f"/boot/config-{release}", "/proc/config.gz"):
            try:
                if path.endswith(".gz"):
                    import gzip

                    with gzip.open(path, "rt") as fh:
                        text = fh.read()
                else:
                    with open(path, encoding="utf-8") as fh:
                        text = fh.read()
                break
            except OSError:
                continue
        if text is None:
            self.errors["kernel/config.txt"] = "no /boot/config-* or /proc/config.gz"
            return
        wanted = [line for line in text.splitlines()
                  if line.split("=", 1)[0].lstrip("# ").split(" ")[0] in KERNEL_OPTIONS]
        self.add("kernel/config.txt", "\n".join(wanted) + "\n")

    def _logs(self) -> None:
        for path in LOG_FILES:
            try:
                size = os.path.getsize(path)
                with open(path, "rb") as fh:
                    fh.seek(max(0, size - MAX_LOG_BYTES))
                    self.add(f"logs/{os.path.basename(path)}",
                             fh.read().decode("utf-8", "replace"))
            except OSError:
                continue
        if shutil.which("journalctl"):
            for unit in ("cilium-py-agent", "cilium-py-docker"):
                out = self._run(f"logs/{unit}.journal", ["journalctl", "-u", unit, "-n", "20000",
                                                         "--no-pager"])
                if out:
                    self.add(f"logs/{unit}.journal.txt", out)

    def _metrics(self) -> None:
        if not self.metrics_url:
            return
        import requests

        try:
            resp = requests.get(self.metrics_url, timeout=10)
            resp.raise_for_status()
            self.add("agent/metrics.txt", resp.text)
        except requests.RequestException as exc:
            self.errors["agent/metrics.txt"] = str(exc)


def write_archive(collector: Collector, path: str) -> str:
    """One .tar.gz with everything under a dated top directory; returns its path."""
    top = "cilium-py-bugtool-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(collector.files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    os.chmod(path, 0o600)
    return path
