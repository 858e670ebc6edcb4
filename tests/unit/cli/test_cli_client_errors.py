"""The CLI's one line when the agent's socket gives no answer (issue 11 item 3).

Real sockets, no agent: one that accepts and never answers, one the user may not open,
one that is missing. The permission case runs the client as ``nobody``, since root
passes every permission check.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilium_py.cli.client import AgentClient, CLIError

CLI = str(Path(sys.executable).parent / "cilium-py")


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="cpyt-cli-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def listening(path: str) -> socket.socket:
    """Accepts connections (the kernel does, through the backlog) and never answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s


def test_silent_socket_times_out_with_a_clear_message(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "agent.sock")
    with listening(path):
        client = AgentClient(path, timeout=1.0)
        with pytest.raises(CLIError) as exc:
            client.get("/v1/healthz")
    text = str(exc.value)
    assert "did not answer within 1s" in text and path in text
    assert "is cilium-py-agent running" not in text


def test_cli_status_on_a_silent_socket_ends(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "agent.sock")
    with listening(path):
        res = subprocess.run([CLI, "--socket", path, "--api-timeout", "2", "status"],
                             capture_output=True, text=True, timeout=120)
        env_res = subprocess.run([CLI, "--socket", path, "status"], capture_output=True,
                                 text=True, timeout=120,
                                 env=dict(os.environ, CILIUM_PY_TIMEOUT="1.5"))
    assert res.returncode == 1
    assert res.stderr.startswith("cilium-py: the agent at ") and "did not answer" in \
        res.stderr
    assert "within 2s" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert env_res.returncode == 1 and "within 1.5s" in env_res.stderr, env_res.stderr


def test_timeout_must_be_positive() -> None:
    res = subprocess.run([CLI, "--api-timeout", "0", "status"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "--api-timeout" in res.stderr, res.stderr


def test_permission_denied_says_so(sock_dir: str) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the client as another user")
    os.chmod(sock_dir, 0o755)
    path = os.path.join(sock_dir, "agent.sock")
    with listening(path):
        os.chmod(path, 0o600)
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              CLI, "--socket", path, "status"], capture_output=True,
                             text=True, timeout=120)
    assert res.returncode == 1, res
    assert "permission denied" in res.stderr and path in res.stderr, res.stderr
    assert "is cilium-py-agent running" not in res.stderr


def test_missing_and_refusing_sockets_ask_whether_the_agent_runs(sock_dir: str) -> None:
    missing = os.path.join(sock_dir, "none.sock")
    with pytest.raises(CLIError, match="no agent socket at .*is cilium-py-agent running"):
        AgentClient(missing, timeout=5).get("/v1/healthz")
    stale = os.path.join(sock_dir, "stale.sock")
    listening(stale).close()  # the file stays, nobody listens: connection refused
    with pytest.raises(CLIError, match="cannot reach the agent at .*is cilium-py-agent"):
        AgentClient(stale, timeout=5).get("/v1/healthz")
