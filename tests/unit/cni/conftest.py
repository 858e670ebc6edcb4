"""Fixtures for the CNI adapter's tests: a fake agent, a test netns, and an exec helper.

The exec helper runs the installed ``cilium-py-cni`` console script exactly as a runtime
does (environment + stdin, result on stdout), so these tests cover process start-up,
stdout discipline and exit codes, not just the functions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cni.fake_agent import FakeAgent

CNI_BIN = str(Path(sys.executable).parent / "cilium-py-cni")


@dataclass
class CNIRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> Any:
        """The single JSON document on stdout (the spec allows nothing else)."""
        return json.loads(self.stdout) if self.stdout.strip() else None


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short temp dir: unix socket paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="cpyt-", dir="/tmp")
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def fake_agent(short_tmp: str) -> Iterator[FakeAgent]:
    agent = FakeAgent(os.path.join(short_tmp, "agent.sock")).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def container_netns() -> Iterator[str]:
    """A test-made netns path as a runtime would pass it in CNI_NETNS."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = f"cpyt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def netconf(version: str = "1.0.0", socket_path: str = "", log_file: str = "",
            **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": version, "name": "cpyt-net", "type": "cilium-py-cni"}
    if socket_path:
        conf["agent-socket"] = socket_path
    if log_file:
        conf["log-file"] = log_file
    conf.update(extra)
    return conf


@pytest.fixture
def run_cni(short_tmp: str) -> Callable[..., CNIRun]:
    """``run_cni(command, conf, **env)``: exec the plugin; ``conf`` may be raw bytes."""
    log_file = os.path.join(short_tmp, "cni.log")

    def run(command: str, conf: dict[str, Any] | bytes | None = None, *,
            container_id: str = "ctr1", netns: str | None = "/var/run/netns/none",
            ifname: str = "eth0", cni_args: str | None = None,
            env: dict[str, str] | None = None, drop: tuple[str, ...] = (),
            timeout: float = 60) -> CNIRun:
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
                   "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin",
                   "CILIUM_PY_CNI_LOG": log_file}
        if netns is not None:
            environ["CNI_NETNS"] = netns
        if cni_args is not None:
            environ["CNI_ARGS"] = cni_args
        environ.update(env or {})
        for name in drop:
            environ.pop(name, None)
        if isinstance(conf, dict):
            conf.setdefault("log-file", log_file)
            stdin = json.dumps(conf).encode()
        else:
            stdin = conf or b""
        proc = subprocess.run([CNI_BIN], input=stdin, env=environ, capture_output=True,
                              timeout=timeout)
        return CNIRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    run.log_file = log_file  # type: ignore[attr-defined]
    return run
