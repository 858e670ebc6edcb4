"""Shared fixtures: a running agent in a test-made node namespace.

Everything a fixture makes carries a unique ``cpyt-`` name and is removed by that name
at teardown, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings

# The nightly (tests/nightly/fuzz.py) runs property tests with this profile: many more
# examples than the suite's defaults, no per-example deadline.
settings.register_profile("nightly", max_examples=2000, deadline=None)

# Every agent a test starts (through start_agent or its own Popen) inherits this: socket
# LB's default is the cgroup v2 root, which no test may attach to. A test of socket LB
# passes --socket-lb-cgroup with a cgroup it made (flags win over the environment).
os.environ["CILIUM_PY_SOCKET_LB_CGROUP"] = "none"

VENV_BIN = Path(sys.executable).parent
AGENT = str(VENV_BIN / "cilium-py-agent")
CLI = str(VENV_BIN / "cilium-py")


def nsenter(netns: str) -> list[str]:
    """Command prefix that runs a program in a named network namespace."""
    return ["nsenter", f"--net=/var/run/netns/{netns}", "--"]


def unique(prefix: str = "cpyt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (this machine runs the suite as an unprivileged user)")


@dataclass
class RunningAgent:
    """An agent process started for one test, and how to reach it."""

    netns: str
    state_dir: str
    socket: str
    bpf_root: str
    proc: subprocess.Popen
    log_path: str
    extra_args: list[str] = field(default_factory=list)

    def cli(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        env = dict(os.environ, CILIUM_PY_SOCK=self.socket)
        return subprocess.run(
            [CLI, *args], env=env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def api(self, method: str, path: str, body: object = None, timeout: float = 60):
        """One REST call to the agent; returns the requests Response."""
        from urllib.parse import quote

        import requests_unixsocket

        url = "http+unix://" + quote(self.socket, safe="") + path
        with requests_unixsocket.Session() as session:
            return session.request(method, url, json=body, timeout=timeout)

    def in_netns(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*nsenter(self.netns), *cmd], **kw)

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_for_socket(agent: RunningAgent, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{agent.log()}")
        if os.path.exists(agent.socket):
            res = agent.cli("status", "-o", "json")
            if res.returncode in (0, 1) and res.stdout.strip().startswith("{"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"agent did not come up in {timeout}s:\n{agent.log()}")


def start_agent(netns: str, workdir: str, bpf_root: str, *extra: str,
                state_dir: str | None = None, timeout: float | None = None) -> RunningAgent:
    state_dir = state_dir or os.path.join(workdir, "state")
    sock = os.path.join(workdir, "agent.sock")
    log_path = os.path.join(workdir, "agent.log")
    logf = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    # nsenter switches only the network namespace; `ip netns exec` would also remount
    # /sys and hide the BPF filesystem from the agent.
    if not any(a.startswith("--health-checking") for a in extra):
        # Tests that are not about the connectivity monitor run without its endpoint.
        extra = ("--health-checking", "false", *extra)
    cmd = [*nsenter(netns), AGENT, "--state-dir", state_dir, "--socket", sock,
           "--bpf-root", bpf_root, "--log-level", "debug", *extra]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    agent = RunningAgent(netns, state_dir, sock, bpf_root, proc, log_path, list(extra))
    try:
        wait_for_socket(agent, *(() if timeout is None else (timeout,)))
    except BaseException:
        agent.stop()  # an agent that did not come up must not outlive the test
        raise
    return agent


@pytest.fixture
def node_netns() -> Iterator[str]:
    """A test-made "node" namespace with loopback up."""
    require_root()
    name = unique("cpyt-node")
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def bpf_root() -> Iterator[str]:
    require_root()
    path = f"/sys/fs/bpf/{unique()}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="cpyt-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(node_netns: str, workdir: str, bpf_root: str) -> Iterator[RunningAgent]:
    """A real cilium-py-agent running inside its own node namespace."""
    running = start_agent(node_netns, workdir, bpf_root)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def agent_in_new_node(*extra: str) -> Iterator[RunningAgent]:
    """An agent in a node namespace, work dir and pin root of its own, all removed by
    name at exit: for fixtures wider than one test, which cannot use the ones above."""
    require_root()
    node, bpf_path = unique("cpyt-node"), f"/sys/fs/bpf/{unique()}"
    work = tempfile.mkdtemp(prefix="cpyt-")
    subprocess.run(["ip", "netns", "add", node], check=True)
    running = None
    try:
        subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
        running = start_agent(node, work, bpf_path, *extra)
        yield running
    finally:
        if running is not None:
            running.stop()
        subprocess.run(["ip", "netns", "del", node], check=False)
        shutil.rmtree(bpf_path, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def module_agent() -> Iterator[RunningAgent]:
    """One agent shared by the tests of a module that each clean up what they make:
    an agent start costs 7 to 10 s of BPF compile and verification."""
    with agent_in_new_node() as running:
        yield running


def reset_agent(agent: RunningAgent, timeout: float = 15.0) -> None:
    """Leave a shared agent as the next test expects it: no policy rule, no endpoint,
    no allocated address, no endpoint veth on the node. Endpoints are deleted through
    the API (their namespaces may be gone already, which the agent notices by itself
    within about 2 s)."""
    if agent.proc.poll() is not None:
        return
    agent.api("DELETE", "/v1/policy")  # 404 when there is none
    for ep in agent.api("GET", "/v1/endpoint").json():
        agent.api("DELETE", f"/v1/endpoint/{ep['id']}")
    deadline = time.monotonic() + timeout
    state: tuple[object, ...] = ()
    while time.monotonic() < deadline:
        links = subprocess.run(["ip", "-n", agent.netns, "-br", "link"], capture_output=True,
                               text=True).stdout
        state = ([ep["id"] for ep in agent.api("GET", "/v1/endpoint").json()],
                 agent.api("GET", "/v1/ipam").json()["allocations"],
                 [line.split()[0] for line in links.splitlines() if line.startswith("lxc")])
        if state == ([], {}, []):
            return
        time.sleep(0.2)
    raise AssertionError(f"the shared agent still holds endpoints, addresses or veths "
                         f"after {timeout} s: {state}")
