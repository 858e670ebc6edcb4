"""A small client for Envoy's admin interface on its unix socket."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EnvoyAdmin:
    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.path = socket_path
        self.timeout = timeout

    def request(self, method: str, target: str) -> tuple[int, str]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, target)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            status, body = self.request("GET", "/ready")
        except OSError:
            return False
        return status == 200 and body.strip() == "LIVE"

    def route_versions(self) -> dict[str, str]:
        """Route configuration name -> version_info Envoy runs."""
        status, body = self.request("GET", "/config_dump?resource=dynamic_route_configs")
        if status != 200:
            raise OSError(f"envoy admin answered {status}")
        out = {}
        for cfg in json.loads(body).get("configs", []):
            route = cfg.get("route_config", {})
            out[route.get("name", "")] = cfg.get("version_info", "")
        return out

    def stats(self, filter_regex: str) -> dict[str, int]:
        status, body = self.request("GET", f"/stats?format=json&filter={filter_regex}")
        if status != 200:
            raise OSError(f"envoy admin answered {status}")
        doc: dict[str, Any] = json.loads(body)
        return {s["name"]: int(s.get("value", 0)) for s in doc.get("stats", []) if "name" in s
                and isinstance(s.get("value"), int)}

    def reopen_logs(self) -> None:
        self.request("POST", "/reopen_logs")
