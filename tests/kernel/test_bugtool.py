"""``cilium-py bugtool`` against a real agent, and with the agent down."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

from tests.conftest import CLI, RunningAgent, nsenter


def run_bugtool(agent: RunningAgent, archive: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CILIUM_PY_SOCK=agent.socket)
    return subprocess.run([*nsenter(agent.netns), CLI, "bugtool", "--archive", archive],
                          env=env, capture_output=True, text=True, timeout=120)


def members(archive: str) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def test_bugtool_collects_agent_state_maps_and_kernel_side(agent: RunningAgent,
                                                           workdir: str) -> None:
    archive = os.path.join(workdir, "report.tar.gz")
    res = run_bugtool(agent, archive)
    assert res.returncode == 0, res.stderr
    assert oct(os.stat(archive).st_mode & 0o777) == "0o600"
    files = members(archive)
    for name in ("summary.txt", "agent/status.json", "agent/config.json",
                 "agent/endpoints.json", "agent/identities.json", "agent/policy.json",
                 "agent/bpf/ipcache.json", "agent/bpf/conntrack.json", "agent/bpf/drops.json",
                 "kernel/ip-addr.txt", "kernel/ip-route.txt", "kernel/ip-rule.txt",
                 "kernel/iptables-save.txt", "kernel/tc-qdisc.txt", "kernel/uname.txt"):
        assert name in files, (name, sorted(files))
    status = json.loads(files["agent/status.json"])
    assert "datapath" in status["subsystems"]
    # It ran in the agent's node namespace: the router device is in the addresses.
    assert b"cilium_host" in files["kernel/ip-addr.txt"]
    assert b"CILIUM_PY" in files["kernel/iptables-save.txt"]


def test_bugtool_works_with_the_agent_down(agent: RunningAgent, workdir: str) -> None:
    agent.stop()
    archive = os.path.join(workdir, "down.tar.gz")
    res = run_bugtool(agent, archive)
    assert res.returncode == 0, res.stderr
    assert "agent not reachable" in res.stdout
    files = members(archive)
    assert "kernel/ip-link.txt" in files and "agent/status.json" not in files
    assert b"agent not reachable" in files["errors.txt"]
