"""The real agent process: start, answer the CLI, stop cleanly, refuse bad input."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess

from tests.conftest import AGENT, CLI, nsenter, start_agent


def test_status_against_running_agent(agent) -> None:
    res = agent.cli("status")
    assert res.returncode == 0, res.stderr
    assert "reachable" in res.stdout
    for subsystem in ("store", "datapath-prerequisites"):
        assert subsystem in res.stdout
    doc = json.loads(agent.cli("status", "-o", "json").stdout)
    assert doc["status"] == "ok"
    assert doc["subsystems"]["store"]["status"] == "ok"


def test_socket_mode_and_json_logs(agent) -> None:
    mode = stat.S_IMODE(os.stat(agent.socket).st_mode)
    assert mode == 0o660
    lines = [ln for ln in agent.log().splitlines() if ln.startswith("{")]
    assert lines, agent.log()
    for line in lines:
        doc = json.loads(line)
        assert {"time", "level", "subsystem", "message"} <= set(doc)


def test_sigterm_stops_cleanly(agent) -> None:
    assert agent.stop(signal.SIGTERM) == 0
    assert not os.path.exists(agent.socket)
    res = agent.cli("status")
    assert res.returncode == 1
    # The agent removed its socket on the way out, so the CLI says that, not a refusal.
    assert f"no agent socket at {agent.socket}: is cilium-py-agent running?" in res.stderr
    assert "Traceback" not in res.stderr


def test_state_survives_kill_9(node_netns, workdir, bpf_root) -> None:
    first = start_agent(node_netns, workdir, bpf_root)
    try:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    # gunicorn's worker is a child; make sure it is gone before the restart.
    subprocess.run(["sleep", "0.5"])
    second = start_agent(node_netns, workdir, bpf_root)
    try:
        assert second.cli("status").returncode == 0
    finally:
        second.stop()


def test_cli_without_agent(tmp_path) -> None:
    sock = str(tmp_path / "none.sock")
    res = subprocess.run([CLI, "--socket", sock, "status"], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"cilium-py: no agent socket at {sock}: is cilium-py-agent running?"
    )
    res = subprocess.run([CLI, "status", "-o", "json"], capture_output=True, text=True,
                         env=dict(os.environ, CILIUM_PY_SOCK=sock))
    assert res.returncode == 1 and sock in res.stderr


def test_unknown_flag_and_broken_config_exit_2(tmp_path) -> None:
    res = subprocess.run([AGENT, "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "--bogus" in res.stderr
    cfg = tmp_path / "c.json"
    cfg.write_text('{"state-dir": "/x", "no-such-key": true}')
    res = subprocess.run([AGENT, "--config", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 2 and "no-such-key" in res.stderr


def test_missing_bpffs_fails_fast(tmp_path) -> None:
    res = subprocess.run(
        [AGENT, "--state-dir", str(tmp_path / "s"), "--socket", str(tmp_path / "a.sock"),
         "--bpf-root", str(tmp_path / "not-bpffs")],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1
    assert "mount -t bpf bpf /sys/fs/bpf" in res.stderr
    assert not os.path.exists(tmp_path / "a.sock")


def test_not_root_fails_fast(tmp_path) -> None:
    os.chmod(tmp_path, 0o755)
    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", AGENT,
         "--state-dir", str(tmp_path / "s"), "--socket", str(tmp_path / "a.sock")],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1
    assert "must run as root" in res.stderr


def test_second_agent_on_same_socket_refused(agent) -> None:
    res = subprocess.run(
        [*nsenter(agent.netns), AGENT, "--socket", agent.socket,
         "--state-dir", agent.state_dir + "-2", "--bpf-root", agent.bpf_root + "-2"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1 and "already serving" in res.stderr
    assert agent.cli("status").returncode == 0
