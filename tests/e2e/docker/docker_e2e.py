"""Helpers of the Docker end-to-end tests: a real dockerd, the agent, the plugin.

dockerd lives in the root namespace, so these tests are the one place where the agent
runs there too. Everything they make has a ``cpyt-`` name unique to the session (the
plugin's driver name, networks, containers, the outside namespace, the agent's router
device and BPF pin path) and is removed by that name at teardown, pass or fail. The
agent uses its own pools (10.201.0.0/16, fd10:201::/112), state directory and socket.
dockerd is started only when it is not running, and then stopped again by its pid.
"""

from __future__ import annotations

import json
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
from typing import Any

import pytest

from cilium_py.cli.client import AgentClient
from cilium_py.docker.ports import Chains
from tests.conftest import AGENT, RunningAgent, wait_for_socket

POOL4 = "10.201.0.0/16"
POOL6 = "fd10:201::/112"
IMAGE = "cpyt-busybox:e2e"
INIT_IDENTITY = 5
DOCKER_SOCK = "/var/run/docker.sock"


def run(*cmd: str, check: bool = True, timeout: float = 120,
        **kw: Any) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return res


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run("docker", *args, check=check, timeout=timeout)


def dockerd_up(timeout: float = 20) -> bool:
    """Whether dockerd answers. A daemon still initialising (a first start on a fresh
    machine sets up containerd, storage and its iptables chains) can hold ``docker info``
    for a long while; that counts as not up yet, not as an error."""
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", check=False, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def dockerd_running(log_name: str, start_timeout: float = 240) -> Iterator[None]:
    """A running dockerd; started (and stopped again by its pid) only when none was
    running. RuntimeError, with the end of dockerd's log, when it does not come up."""
    proc = None
    if not dockerd_up():
        log_path = os.path.join(tempfile.gettempdir(), log_name)
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + start_timeout
        try:
            while not dockerd_up():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dockerd did not come up within {start_timeout:.0f} s "
                        f"(exit {proc.poll()}); end of {log_path}:\n{_log_tail(log_path)}")
                time.sleep(0.5)
        except BaseException:
            _stop_dockerd(proc)
            raise
    try:
        yield
    finally:
        if proc is not None:
            _stop_dockerd(proc)


def _stop_dockerd(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class PrivateDockerd:
    """A dockerd of the test's own, for tests that stop and start dockerd.

    It has its own socket, data and exec roots and pid file, a default bridge device of
    its own (``--bridge none`` would make dockerd delete the host's ``docker0``) and no
    iptables rules or sysctls of its own, so starting and stopping it touches neither
    the session's dockerd nor an installed one; like any dockerd it finds the session
    plugin under ``/run/docker/plugins``. Started and stopped by its pid; ``remove``
    deletes its containers and networks, stops it, and deletes its bridge and directory.
    """

    root: str
    bridge: str  # 15 characters at most
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "docker.sock")

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("docker", "-H", f"unix://{self.socket}", *args, check=check)

    def start(self, timeout: float = 60) -> None:
        if run("ip", "link", "show", self.bridge, check=False).returncode != 0:
            # No traffic ever uses it: it only keeps dockerd off docker0.
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "addr", "add", "10.209.255.1/24", "dev", self.bridge)
        log = open(os.path.join(self.root, "dockerd.log"), "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            ["dockerd", "-H", f"unix://{self.socket}", "--data-root", f"{self.root}/data",
             "--exec-root", f"{self.root}/exec", "--pidfile", f"{self.root}/dockerd.pid",
             "--bridge", self.bridge, "--iptables=false", "--ip6tables=false",
             "--ip-forward=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while self.docker("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"private dockerd did not start; see {self.root}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_dockerd(self.proc)
        self.proc = None

    def load(self, image: str) -> None:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        res = subprocess.run(["docker", "-H", f"unix://{self.socket}", "load", "-q"],
                             stdin=save.stdout, capture_output=True, text=True)
        save.wait()
        if res.returncode != 0:
            raise AssertionError(f"docker load into the private dockerd failed: {res.stderr}")

    def endpoint_id(self, container: str, network: str, timeout: float = 30) -> str:
        """The container's endpoint on ``network`` once it is running (it may be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            info = json.loads(self.docker("inspect", container).stdout)[0]
            net = (info["NetworkSettings"]["Networks"] or {}).get(network) or {}
            if info["State"]["Running"] and net.get("EndpointID"):
                return net["EndpointID"]
            if time.monotonic() > deadline:
                raise AssertionError(f"{container} is not running on {network}: {info['State']}")
            time.sleep(0.1)

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            names = self.docker("ps", "-aq", check=False).stdout.split()
            if names:
                self.docker("rm", "-f", *names, check=False)
            listed = self.docker("network", "ls", "--format", "{{.ID}} {{.Driver}}",
                                 check=False).stdout.split("\n")
            made = [line.split()[0] for line in listed
                    if line.strip() and line.split()[1] not in ("host", "null")]
            if made:
                self.docker("network", "rm", *made, check=False)
        self.stop()
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = [line.split()[4] for line in fh]
        for mount in sorted((m for m in mounts if m.startswith(self.root)), reverse=True):
            run("umount", "-l", mount, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def is_static_elf(path: str) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP header (no loader needed).

    Read directly rather than with ``file``/``ldd``, which a minimal machine may lack.
    """
    with open(os.path.realpath(path), "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff = int.from_bytes(head[0x20:0x28], "little")
        phentsize = int.from_bytes(head[0x36:0x38], "little")
        phnum = int.from_bytes(head[0x38:0x3A], "little")
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    pt_interp = 3
    return all(int.from_bytes(table[i:i + 4], "little") != pt_interp
               for i in range(0, len(table), phentsize))


def build_busybox_image(tag: str) -> None:
    """``docker import`` of a root filesystem made of Debian's static busybox."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox) or not is_static_elf(busybox):
        pytest.skip("no static busybox: install busybox-static")
    root = Path(tempfile.mkdtemp(prefix="cpyt-rootfs-"))
    try:
        (root / "bin").mkdir()
        (root / "www").mkdir()
        (root / "tmp").mkdir()
        (root / "etc").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = run(busybox, "--list").stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "sbin").symlink_to("bin")
        (root / "usr").mkdir()
        (root / "usr" / "bin").symlink_to("../bin")
        (root / "www" / "index.html").write_text("hello from cilium-py\n")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        res = subprocess.run(["docker", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]',
                              "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if res.returncode != 0:
            raise AssertionError(f"docker import failed: {res.stderr}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_root_agent(workdir: str, bpf_root: str, router: str, *extra: str,
                     pools: tuple[str, str] = (POOL4, POOL6)) -> RunningAgent:
    """An agent in the root namespace (dockerd's), with its own names and pools."""
    state_dir = os.path.join(workdir, "state")
    sock = os.path.join(workdir, "agent.sock")
    log_path = os.path.join(workdir, "agent.log")
    logf = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    cmd = [AGENT, "--state-dir", state_dir, "--socket", sock, "--bpf-root", bpf_root,
           "--router-device", router, "--ipv4-pool", pools[0], "--ipv6-pool", pools[1],
           "--log-level", "debug", "--health-checking", "false", *extra]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    agent = RunningAgent("", state_dir, sock, bpf_root, proc, log_path, list(extra))
    try:
        wait_for_socket(agent)
    except BaseException:
        agent.stop()
        raise
    return agent


def agent_router(agent: RunningAgent) -> str:
    """The router device name an agent was started with."""
    cmd = agent.proc.args
    return cmd[cmd.index("--router-device") + 1]


def restart_agent(env: DockerEnv, *extra: str) -> None:
    """Stop the session agent and start it again on its state, with ``extra`` flags."""
    agent = env.agent
    agent.stop()
    env.agent = start_root_agent(os.path.dirname(agent.state_dir), agent.bpf_root,
                                 agent_router(agent), *extra)


@dataclass
class Plugin:
    """The cilium-py-docker process under a session-unique driver name."""

    name: str
    socket: str
    agent_socket: str
    state_file: str
    log_path: str
    proc: subprocess.Popen | None = None
    log_level: str = "debug"
    # The agent runs its own label watcher whenever dockerd's socket exists (the
    # installed set-up relies on that); the plugin's is for agents that do not.
    watch_labels: bool = True

    def start(self) -> None:
        logf = open(self.log_path, "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "cilium_py.docker.main", "--agent-socket",
               self.agent_socket, "--plugin-socket", self.socket, "--state-file",
               self.state_file, "--log-level", self.log_level]
        if self.watch_labels:
            cmd.append("--watch-labels")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited:\n{self.log()}")
            if os.path.exists(self.socket):
                try:
                    if self.post("Plugin.Activate")[0] == 200:
                        return
                except Exception:  # noqa: BLE001 - not serving yet
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"plugin did not come up:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def chains(self) -> Chains:
        return Chains(self.name)

    def remove_chains(self) -> None:
        """Remove this instance's port chains (and only this instance's)."""
        run(sys.executable, "-m", "cilium_py.docker.main", "--plugin-socket", self.socket,
            "--remove-port-chains", check=False)

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()
        except OSError:
            return ""

    def post(self, method: str, body: bytes = b"") -> tuple[int, Any]:
        """A raw call on the plugin socket, as dockerd makes it."""
        from urllib.parse import quote

        import requests_unixsocket

        session = requests_unixsocket.Session()
        resp = session.post("http+unix://" + quote(self.socket, safe="") + "/" + method,
                            data=body, timeout=30)
        return resp.status_code, resp.json()


@dataclass
class DockerEnv:
    """What a test needs: names, the agent, the plugin and helpers."""

    prefix: str
    agent: RunningAgent
    plugin: Plugin
    image: str
    workdir: str
    made_networks: list[str] = field(default_factory=list)

    @property
    def driver(self) -> str:
        return self.plugin.name

    @property
    def chains(self) -> Chains:
        """The session plugin's own iptables chains (never the installed plugin's)."""
        return self.plugin.chains

    def api(self) -> AgentClient:
        return AgentClient(self.agent.socket)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}-{uuid.uuid4().hex[:4]}"

    def network(self, what: str = "net", *extra: str) -> str:
        name = self.name(what)
        docker("network", "create", "-d", self.driver, "--ipam-driver", self.driver,
               *extra, name)
        self.made_networks.append(name)
        return name

    def run(self, network: str, *args: str, labels: dict[str, str] | None = None,
            name: str | None = None, cmd: tuple[str, ...] = ("sleep", "3600")) -> str:
        name = name or self.name("ctr")
        label_args = [a for k, v in (labels or {}).items() for a in ("-l", f"{k}={v}")]
        docker("run", "-d", "--name", name, "--network", network, *label_args, *args,
               self.image, *cmd)
        return name

    def web(self, network: str, labels: dict[str, str] | None = None, *args: str) -> str:
        return self.run(network, *args, labels=labels,
                        cmd=("httpd", "-f", "-p", "80", "-h", "/www"))

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(docker("inspect", container).stdout)[0]

    def addresses(self, container: str, network: str) -> tuple[str, str]:
        net = self.inspect(container)["NetworkSettings"]["Networks"][network]
        return net["IPAddress"], net["GlobalIPv6Address"]

    def endpoint_id(self, container: str, network: str) -> str:
        return self.inspect(container)["NetworkSettings"]["Networks"][network]["EndpointID"]

    def exec(self, container: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", container, *cmd, check=False, timeout=timeout)

    def http(self, client: str, address: str, port: int = 80, wait: int = 3) -> str:
        """One HTTP GET with busybox nc; returns the response text ('' when refused/dropped)."""
        script = f'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc -w {wait} {address} {port}'
        return self.exec(client, "sh", "-c", script, timeout=wait + 30).stdout

    def ping(self, client: str, address: str, count: int = 2) -> bool:
        return self.exec(client, "ping", "-c", str(count), "-W", "2", address).returncode == 0

    def endpoint(self, ep_id: str) -> dict[str, Any] | None:
        resp = self.api().request("GET", f"/v1/endpoint/{ep_id}")
        return resp.json() if resp.status == 200 else None

    def wait_identity(self, ep_id: str, timeout: float = 10) -> dict[str, Any]:
        """Wait until the watcher has replaced the init identity."""
        deadline = time.monotonic() + timeout
        ep: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            ep = self.endpoint(ep_id)
            if ep and ep.get("identity") != INIT_IDENTITY:
                return ep
            time.sleep(0.05)
        raise AssertionError(f"endpoint {ep_id} kept the init identity: {ep}")

    def cleanup(self) -> None:
        """Remove every container and network of this session by name."""
        names = docker("ps", "-aq", "--filter", f"name={self.prefix}-", check=False).stdout.split()
        if names:
            docker("rm", "-f", *names, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"name={self.prefix}-",
                      check=False).stdout.split()
        if nets:
            docker("network", "rm", *nets, check=False)




def leak_snapshot(env: DockerEnv) -> dict[str, Any]:
    """Everything an endpoint leaves behind if it leaks: agent, IPAM, links, BPF, rules."""
    api = env.api()
    links = run("ip", "-o", "link", "show").stdout.splitlines()
    names = {line.split(":")[1].strip().split("@")[0] for line in links}
    rules = run("iptables-save").stdout + run("ip6tables-save").stdout
    return {
        "endpoints": sorted(ep["id"] for ep in api.get("/v1/endpoint")),
        "allocations": sorted(api.get("/v1/ipam")["allocations"]),
        "links": sorted(n for n in names if n.startswith(("lxc", "tmp"))),
        "bpf": len(api.get("/v1/bpf/endpoint")),
        "port-rules": rules.count(env.chains.comment_prefix),
    }
