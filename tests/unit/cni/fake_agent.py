"""A stand-in for the agent's endpoint API on a temporary unix socket.

The CNI plugin is an adapter: its unit tests check that it speaks CNI correctly for
every answer the agent can give, including the failures a real agent rarely produces
on demand (pool exhausted, 503, a hang, garbage). The real agent is used by the e2e
tests. With ``plumb=True`` the fake also puts an interface (a veth whose peer stays
beside it) with the endpoint's addresses and routes into the container netns, so CHECK
has something real to inspect (which it reads with the agent's own code).
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from cilium_py.endpoint import plumbing


class FakeAgent:
    """Endpoint store plus switches that make the next answers fail."""

    def __init__(self, socket_path: str, *, plumb: bool = False, ipv4: bool = True,
                 ipv6: bool = True) -> None:
        self.socket_path = socket_path
        self.plumb = plumb
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        self.next_host = 2
        # (method or "*", status, body) answered instead of the real thing.
        self.fail: tuple[str, int, Any] | None = None
        self.hang_seconds = 0.0
        self.garbage = False
        self.health: tuple[int, dict[str, Any]] = (200, {"status": "ok", "subsystems": {}})
        self.server: socketserver.UnixStreamServer | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeAgent:
        agent = self

        class Handler(_Handler):
            fake = agent

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(self.socket_path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    # -- the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            fail = self.fail
        if self.hang_seconds:
            time.sleep(self.hang_seconds)
        if fail and fail[0] in ("*", method):
            return fail[1], fail[2]
        if path == "/v1/healthz" and method == "GET":
            return self.health
        if path == "/v1/endpoint" and method == "GET":
            with self.lock:
                return 200, list(self.endpoints.values())
        prefix = "/v1/endpoint/"
        if not path.startswith(prefix):
            return 404, {"error": "no such API route", "fields": {}}
        ep_id, _, sub = path[len(prefix):].partition("/")
        if method == "PUT" and not sub:
            return self._put(ep_id, body)
        with self.lock:
            ep = self.endpoints.get(ep_id)
            if method == "DELETE" and not sub and ep is not None:
                del self.endpoints[ep_id]
        if ep is None:
            return 404, {"error": f"endpoint {ep_id} not found", "fields": {"id": ep_id}}
        if method == "GET" and sub == "interface":
            # The real agent's reading of the container's interface (pyroute2).
            return 200, {"netns": ep["netns"],
                         **plumbing.interface_view(ep["netns"], ep["interface-name"])}
        if method == "GET" and not sub:
            return 200, ep
        if method == "DELETE" and not sub:
            self._unplumb(ep)
            return 204, None
        return 405, {"error": "method not allowed", "fields": {}}

    def _put(self, ep_id: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("netns"), str):
            return 400, {"error": "invalid request body", "fields": {"netns": "required"}}
        if not os.path.exists(body["netns"]):
            return 400, {"error": f"netns {body['netns']} does not exist",
                         "fields": {"netns": "no such network namespace"}}
        with self.lock:
            if ep_id in self.endpoints:
                return 200, self.endpoints[ep_id]
            host = self.next_host
            self.next_host += 1
        ep = self._model(ep_id, body, host)
        if self.plumb:
            self._plumb(ep)
        with self.lock:
            self.endpoints[ep_id] = ep
        return 201, ep

    def _model(self, ep_id: str, body: dict[str, Any], host: int) -> dict[str, Any]:
        addressing = {"ipv4": f"10.200.0.{host}" if self.ipv4 else None,
                      "ipv6": f"fd10:200::{host:x}" if self.ipv6 else None}
        gateway = {"ipv4": "10.200.0.1" if self.ipv4 else None,
                   "ipv6": "fd10:200::1" if self.ipv6 else None}
        routes = []
        if self.ipv4:
            routes += [{"family": 4, "dst": "10.200.0.1/32", "gateway": None, "scope": "link"},
                       {"family": 4, "dst": "0.0.0.0/0", "gateway": "10.200.0.1",
                        "scope": "global"}]
        if self.ipv6:
            routes += [{"family": 6, "dst": "fd10:200::1/128", "gateway": None,
                        "scope": "global"},
                       {"family": 6, "dst": "::/0", "gateway": "fd10:200::1",
                        "scope": "global"}]
        return {
            "id": ep_id, "container-id": body.get("container-id", ""),
            "container-name": body.get("container-name", ""),
            "network": body.get("network", ""),
            "interface-name": body.get("interface-name", "eth0"), "netns": body["netns"],
            "host-interface": f"lxc{host:08x}", "ifindex": 100 + host,
            "mac": f"02:00:00:00:{host >> 8:02x}:{host & 0xff:02x}",
            "host-mac": f"02:00:00:01:{host >> 8:02x}:{host & 0xff:02x}",
            "addressing": addressing, "gateway": gateway, "routes": routes,
            "labels": list(body.get("labels", [])), "identity": 256, "state": "ready",
        }

    # -- optional plumbing for CHECK -------------------------------------------------------
    @staticmethod
    def _ip(netns: str, *args: str) -> None:
        subprocess.run(["nsenter", f"--net={netns}", "--", "ip", *args], check=True,
                       capture_output=True)

    def _plumb(self, ep: dict[str, Any]) -> None:
        ns, dev = ep["netns"], ep["interface-name"]
        # A veth whose peer stays in the same netns: this kernel has no dummy driver.
        peer = f"cpytp{ep['ifindex']}"
        self._ip(ns, "link", "add", dev, "address", ep["mac"], "type", "veth", "peer", "name",
                 peer)
        if self.ipv6:
            # No DAD: the address is usable at once, as the agent's is.
            subprocess.run(["nsenter", f"--net={ns}", "--", "sysctl", "-qw",
                            f"net.ipv6.conf.{dev}.accept_dad=0"], capture_output=True)
        self._ip(ns, "link", "set", peer, "up")
        self._ip(ns, "link", "set", dev, "up")
        for key in ("ipv4", "ipv6"):
            addr = ep["addressing"][key]
            if addr:
                self._ip(ns, "addr", "add", f"{addr}/{128 if ':' in addr else 32}", "dev", dev)
        for r in ep["routes"]:
            fam = "-6" if r["family"] == 6 else "-4"
            cmd = [fam, "route", "add", r["dst"], "dev", dev]
            if r["gateway"]:
                cmd += ["via", r["gateway"]]
            elif r["scope"] == "link":
                cmd += ["scope", "link"]
            self._ip(ns, *cmd)

    def _unplumb(self, ep: dict[str, Any]) -> None:
        if self.plumb and os.path.exists(ep["netns"]):
            subprocess.run(["nsenter", f"--net={ep['netns']}", "--", "ip", "link", "del",
                            ep["interface-name"]], capture_output=True)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAgent
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # the client address of a unix socket is "", which the default can't print

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        if self.fake.garbage:
            payload = b"<html>not the API</html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
        else:
            status, doc = self.fake.handle(self.command, self.path, body)
            payload = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_POST = _serve
