"""Helpers for the CNI end-to-end tests: the libcni driver, a CNI lab, and traffic.

Everything runs inside test-made namespaces: the agent and the libcni driver (and so
the host ends of the veths, the portmap iptables rules, the reference bridge) live in
a ``cpyt-node-*`` namespace; each "container" is a ``cpyt-*`` namespace. All of them
are removed by name at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cilium_py.cni import install
from tests.conftest import reset_agent

HERE = Path(__file__).resolve().parent
DRIVER_SRC = HERE / "libcni-driver"
DRIVER_BIN = DRIVER_SRC / "bin" / "libcni-driver"
REFERENCE_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins
GOPATH = "/usr/share/gocode"  # Debian's golang-github-appc-cni-dev
# The newest spec version the Debian libcni (1.1.2) and reference plugins (1.1.1) know.
LIBCNI_VERSIONS = ("0.3.1", "0.4.0", "1.0.0")


class DriverUnavailable(RuntimeError):
    """Go, the packaged libcni or the reference plugins are not installed."""


def build_driver() -> str:
    """``go build`` the driver (GOPATH mode, Debian's packaged libcni) unless current."""
    if shutil.which("go") is None or not Path(GOPATH, "src/github.com/containernetworking/cni",
                                               "libcni").is_dir():
        raise DriverUnavailable("needs golang-go and golang-github-appc-cni-dev "
                                "(packaging/install.sh test installs them)")
    if not Path(REFERENCE_PLUGINS, "portmap").exists():
        raise DriverUnavailable("needs containernetworking-plugins "
                                "(packaging/install.sh test installs it)")
    src = DRIVER_SRC / "main.go"
    if DRIVER_BIN.exists() and DRIVER_BIN.stat().st_mtime >= src.stat().st_mtime:
        return str(DRIVER_BIN)
    DRIVER_BIN.parent.mkdir(exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH,
               GOCACHE=str(DRIVER_BIN.parent / ".gocache"))
    env.setdefault("HOME", str(DRIVER_BIN.parent))
    proc = subprocess.run(["go", "build", "-o", str(DRIVER_BIN), "."], cwd=DRIVER_SRC, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building the libcni driver failed:\n{proc.stderr}")
    return str(DRIVER_BIN)


def make_netns(prefix: str = "cpyt") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class DriverResult:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def doc(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def __repr__(self) -> str:
        return f"DriverResult(rc={self.returncode}, stdout={self.stdout!r}, " \
               f"stderr={self.stderr[-2000:]!r})"


class CNILab:
    """A node namespace with a running agent, our plugin installed, and container netns."""

    def __init__(self, agent: Any, driver: str, workdir: str) -> None:
        self.agent = agent
        self.node = agent.netns
        self.driver = driver
        self.workdir = Path(workdir)
        self.plugins_dir = self.workdir / "cni-bin"
        install.install_plugin(str(self.plugins_dir))
        self.cni_path = f"{self.plugins_dir}:{REFERENCE_PLUGINS}"
        self.cache_dir = self.workdir / "cni-cache"
        self.log_file = self.workdir / "cni.log"
        self.netnses: list[str] = []

    # -- configs ---------------------------------------------------------------------------
    def plugin_conf(self, **extra: Any) -> dict[str, Any]:
        return install.cilium_plugin_conf(self.agent.socket, str(self.log_file),
                                          **{"log-level": "debug", **extra})

    def conflist(self, version: str, name: str = "cpyt-cilium", portmap: bool = True,
                 **plugin_extra: Any) -> str:
        plugins: list[dict[str, Any]] = [self.plugin_conf(**plugin_extra)]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True},
                            "snat": True})
        doc = {"cniVersion": version, "name": name, "plugins": plugins}
        path = self.workdir / f"{name}-{version}-{uuid.uuid4().hex[:6]}.conflist"
        path.write_text(json.dumps(doc, indent=2))
        return str(path)

    def conf(self, doc: dict[str, Any]) -> str:
        path = self.workdir / f"conf-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(doc))
        return str(path)

    # -- namespaces --------------------------------------------------------------------------
    def container(self, prefix: str = "cpyt-c") -> str:
        name = make_netns(prefix)
        self.netnses.append(name)
        return name

    def cleanup(self) -> None:
        """Leave the agent as the lab found it, for the next test that shares it."""
        for name in self.netnses:
            delete_netns(name)
        reset_agent(self.agent)

    # -- running things in the node ---------------------------------------------------------------
    def node_run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net=/var/run/netns/{self.node}", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout)

    def drive(self, verb: str, *, conflist: str | None = None, netns: str | None = None,
              cid: str = "cpyt-ctr", ifname: str = "eth0", args: str = "",
              port_mappings: list[dict[str, Any]] | None = None, conf: str | None = None,
              command: str | None = None, timeout: float = 120,
              cni_path: str | None = None) -> DriverResult:
        """Run the libcni driver inside the node namespace, as a runtime on the node would."""
        cmd = [self.driver, verb, "-cni-path", cni_path or self.cni_path,
               "-cache-dir", str(self.cache_dir),
               "-id", cid, "-ifname", ifname]
        if conflist:
            cmd += ["-conflist", conflist]
        if conf:
            cmd += ["-conf", conf]
        if command:
            cmd += ["-command", command]
        if netns:
            cmd += ["-netns", netns if netns.startswith("/") else f"/var/run/netns/{netns}"]
        if args:
            cmd += ["-args", args]
        if port_mappings is not None:
            cmd += ["-port-mappings", json.dumps(port_mappings)]
        return DriverResult(self.node_run(*cmd, timeout=timeout))

    def endpoint(self, ep_id: str) -> Any:
        return self.agent.api("GET", f"/v1/endpoint/{ep_id}")

    def apply_policy(self, rules: list[dict[str, Any]]) -> None:
        resp = self.agent.api("PUT", "/v1/policy", rules)
        assert resp.status_code == 200, resp.text
        rev = resp.json()["revision"]
        wait = self.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=30")
        assert wait.status_code == 200, wait.text


def addresses_in(netns: str, ifname: str = "eth0") -> set[str]:
    out = subprocess.run(["ip", "-j", "-n", netns, "addr", "show", "dev", ifname],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return set()
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out.stdout)
            for a in link.get("addr_info", []) if a.get("scope") != "link"}


# -- traffic (module-level: NetnsWorker pickles callables by name) ------------------------------

_LISTENERS: list[socket.socket] = []


def serve_tcp(ports: tuple[int, ...] = (80, 81)) -> None:
    """Answer b"hi" on each port, v4 and v6, until the worker ends."""
    for port in ports:
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(16)
            _LISTENERS.append(s)
            threading.Thread(target=_accept, args=(s,), daemon=True).start()


def _accept(s: socket.socket) -> None:
    while True:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(b"hi")
            except OSError:
                pass


def tcp_ok(dst: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((dst, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(2) == b"hi"
    except OSError:
        return False


def wait_tcp(worker: Any, dst: str, port: int, want: bool, within: float = 10) -> bool:
    """Poll until the verdict is ``want`` (datapath and policy settle asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        got = worker.call(tcp_ok, dst, port)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
