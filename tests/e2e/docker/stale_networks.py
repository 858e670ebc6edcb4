"""Removing Docker networks that earlier, interrupted test sessions left behind.

A session that is killed before its teardown leaves its ``cpyt-<tag>`` networks in
dockerd's store while their plugin is gone. dockerd then spends about 15 s per such
network looking for the plugin at every start, and refuses to delete the network
without it. So the sweep serves, for each missing test driver, a stub libnetwork
remote driver that accepts the deletion, and removes the networks through dockerd.
Only networks whose name and driver carry the test prefix and whose plugin socket is
absent are touched: a running session's networks keep their live plugin.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

PLUGIN_DIR = "/run/docker/plugins"


class _StubDriver(BaseHTTPRequestHandler):
    """Just enough of the remote driver protocol for dockerd to delete a network."""

    replies = {
        "/Plugin.Activate": {"Implements": ["NetworkDriver", "IpamDriver"]},
        "/NetworkDriver.GetCapabilities": {"Scope": "local"},
        "/IpamDriver.GetCapabilities": {"RequiresMACAddress": False},
    }

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(self.replies.get(self.path, {})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "dockerd"


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextmanager
def _stub_plugin(name: str) -> Iterator[None]:
    path = os.path.join(PLUGIN_DIR, f"{name}.sock")
    os.makedirs(PLUGIN_DIR, exist_ok=True)
    server = _UnixServer(path, _StubDriver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        if os.path.exists(path):
            os.unlink(path)


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def stale_test_networks(prefix: str = "cpyt-") -> dict[str, list[str]]:
    """Driver name -> names of its networks, for test drivers whose plugin is gone."""
    res = _docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")
    stale: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        name, _, driver = line.partition(" ")
        if not (name.startswith(prefix) and driver.startswith(prefix)):
            continue
        if os.path.exists(os.path.join(PLUGIN_DIR, f"{driver}.sock")):
            continue
        stale.setdefault(driver, []).append(name)
    return stale


def remove_stale_test_networks(prefix: str = "cpyt-") -> list[str]:
    """Remove what :func:`stale_test_networks` finds; returns the networks removed."""
    removed = []
    for driver, networks in stale_test_networks(prefix).items():
        with _stub_plugin(driver):
            for net in networks:
                if _docker("network", "rm", net).returncode == 0:
                    removed.append(net)
    return removed
