"""A real etcd (Debian's etcd-server) for tests: its own data dir and loopback ports.

Each instance listens on 127.0.0.1 only, on ports the kernel picked as free, and is
stopped by its pid; nothing is left behind but what the caller's temporary directory
holds. Optional client TLS with a throwaway CA made by openssl.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtcdTLSFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls(directory: str) -> EtcdTLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = Path(directory)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=cpyt-etcd-ca", "-keyout", "ca.key", "-out", "ca.crt")
    # etcd's JSON gateway dials its own gRPC port with the server certificate, so that
    # certificate needs clientAuth too (else every gateway request is 503).
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=cpyt-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return EtcdTLSFiles(str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key"),
                        str(d / "client.crt"), str(d / "client.key"))


@dataclass
class EtcdServer:
    """One single-member etcd cluster."""

    data_dir: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    tls: EtcdTLSFiles | None = None
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    netns: str | None = None  # run inside this test-made namespace (reached over it)

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.client_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Wait for etcd to answer: on a loaded 2-CPU machine its first health check
        took more than 20 s once, though it had elected itself leader within 1 s."""
        scheme = "https" if self.tls else "http"
        client = f"{scheme}://{self.host}:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD, "--name", "cpyt", "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"cpyt={peer}", "--log-level", "warn",
        ]
        if self.tls:
            args += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--trusted-ca-file", self.tls.ca, "--client-cert-auth"]
        if self.netns:
            args = ["nsenter", f"--net=/var/run/netns/{self.netns}", "--", *args]
        log = open(os.path.join(self.data_dir, "etcd.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log()[-2000:]}")
            if self.netns:
                if self._healthy_in_netns():
                    return
                time.sleep(0.1)
                continue
            try:
                with socket.create_connection((self.host, self.client_port), 0.2):
                    pass
                if self._healthy():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not come up: {self.log()[-2000:]}")

    def _healthy(self) -> bool:
        import requests

        scheme = "https" if self.tls else "http"
        kwargs = {}
        if self.tls:
            kwargs = {"verify": self.tls.ca, "cert": (self.tls.client_cert, self.tls.client_key)}
        try:
            r = requests.get(f"{scheme}://{self.host}:{self.client_port}/health", timeout=1,
                             **kwargs)
        except requests.RequestException:
            return False
        return r.ok and r.json().get("health") == "true"

    def _healthy_in_netns(self) -> bool:
        res = subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{self.netns}", "--", "etcdctl",
             f"--endpoints=http://{self.host}:{self.client_port}", "endpoint", "health"],
            capture_output=True, text=True, timeout=10, env={**os.environ, "ETCDCTL_API": "3"})
        return res.returncode == 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return Path(self.data_dir, "etcd.log").read_text(errors="replace")
        except OSError:
            return ""


def start_etcd(tls: bool = False, host: str = "127.0.0.1",
               netns: str | None = None) -> EtcdServer:
    if not os.path.exists(ETCD):
        raise RuntimeError("etcd is not installed (Debian package etcd-server); "
                           "packaging/install.sh test installs it")
    data_dir = tempfile.mkdtemp(prefix="cpyt-etcd-")
    server = EtcdServer(data_dir=data_dir, host=host, netns=netns)
    if netns:  # a namespace of its own: the well-known ports are free there
        server.client_port, server.peer_port = 2379, 2380
    try:
        if tls:
            server.tls = make_tls(data_dir)
        server.start()
    except BaseException:  # an etcd that never answered must not outlive the test
        server.stop(signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return server


def remove_etcd(server: EtcdServer) -> None:
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
