"""The Envoy proxy as the agent sees it: start, update the rules, stop.

Files are written before Envoy reads them and replaced by atomic rename. An update is
confirmed by reading back the route versions Envoy runs; a route file Envoy rejects
is replaced by one that denies everything on that listener (fail closed: Envoy would
otherwise keep enforcing the previous, possibly wider, rules) and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...logs import get_logger
from ..addresses import AddressSets
from ..records import L7Record
from ..redirects import EGRESS, INGRESS, Redirect
from .accesslog import AccessLogReader
from .config import EnvoyPaths, bootstrap, route_config, route_names
from .rbac import rbac_rules
from .supervisor import EnvoyError, EnvoySupervisor

log = get_logger("proxy")

PARSERS = ("http",)
DENY_ALL = {"action": "ALLOW", "policies": {}}


def _write_json(path: str, doc: Mapping[str, Any]) -> bool:
    """Atomically replace ``path``; False when it already holds exactly this."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


def _content_version(route: str, rules: Mapping[str, Any]) -> str:
    data = json.dumps(route_config(route, rules, ""), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


class EnvoyProxy:
    parsers = PARSERS

    def __init__(self, root: str, ports: Mapping[str, int],
                 pool_prefixes: Iterable[tuple[str, int]],
                 on_record: Callable[[L7Record], None], *, concurrency: int = 1,
                 binary: str | None = None) -> None:
        self.paths = EnvoyPaths(root)
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.ports = dict(ports)
        self.pool_prefixes = list(pool_prefixes)
        self.supervisor = EnvoySupervisor(self.paths, binary=binary, concurrency=concurrency)
        self.access_log = AccessLogReader(self.paths.access_log, self.supervisor.admin,
                                          on_record)
        self._lock = threading.Lock()
        self.error: str | None = None

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.supervisor.running

    def has_config(self) -> bool:
        return os.path.exists(self.paths.bootstrap) and all(
            os.path.exists(self.paths.routes(r)) for d in (INGRESS, EGRESS)
            for r in route_names(d))

    def start(self) -> None:
        """Write the bootstrap (routes deny all until the first update) and run Envoy.
        A running Envoy with another bootstrap is restarted."""
        with self._lock:
            for direction in (INGRESS, EGRESS):
                for route in route_names(direction):
                    if not os.path.exists(self.paths.routes(route)):
                        _write_json(self.paths.routes(route),
                                    route_config(route, DENY_ALL, "0"))
            changed = _write_json(self.paths.bootstrap,
                                  bootstrap(self.paths, self.ports, self.pool_prefixes))
            if changed and self.supervisor.running:
                log.info("envoy bootstrap changed; restarting envoy")
                self.supervisor.stop()
            self.supervisor.start()
            self.access_log.start()

    def resume(self) -> bool:
        """Early in agent start-up: bring back (or adopt) Envoy with the files the
        previous agent left, before anything slower runs."""
        if not self.has_config():
            return False
        with self._lock:
            self.supervisor.start()
            self.access_log.start()
        return True

    def stop(self) -> None:
        self.access_log.stop()
        self.supervisor.stop()

    def detach(self) -> None:
        self.access_log.stop()
        self.supervisor.detach()

    # -- policy ---------------------------------------------------------------

    def update(self, redirects: Iterable[Redirect], sets: AddressSets,
               timeout: float = 5.0) -> None:
        by_direction: dict[str, list[Redirect]] = {INGRESS: [], EGRESS: []}
        for r in redirects:
            if r.rules.http:
                by_direction[r.direction].append(r)
        with self._lock:
            docs: dict[str, dict[str, Any]] = {}
            for direction, items in by_direction.items():
                rules = rbac_rules(items, sets)
                for route in route_names(direction):
                    # The version names the content: Envoy ignores a file whose
                    # resources did not change, whatever its version says.
                    version = _content_version(route, rules)
                    docs[route] = route_config(route, rules, version)
            changed = {route: doc["version_info"] for route, doc in docs.items()
                       if _write_json(self.paths.routes(route), doc)}
            if not changed or not self.supervisor.running:
                return
            self._confirm(changed, timeout)

    def _confirm(self, versions: Mapping[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        running: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                running = self.supervisor.admin.route_versions()
            except (OSError, ValueError):
                running = {}
            if all(running.get(r) == v for r, v in versions.items()):
                self.error = None
                return
            time.sleep(0.01)
        stale = [r for r, v in versions.items() if running.get(r) != v]
        self.error = (f"envoy did not take the new routes for {', '.join(stale)} "
                      f"(runs {running}); those listeners now deny everything")
        log.error(self.error)
        for route in stale:
            _write_json(self.paths.routes(route), route_config(route, DENY_ALL, "deny"))
        raise EnvoyError(self.error)

    def health(self) -> dict[str, Any]:
        if not self.running:
            return {"status": "failure", "message": "envoy is not running"}
        if self.error:
            return {"status": "failure", "message": self.error}
        return {"status": "ok",
                "message": f"envoy pid {self.supervisor.pid}, ports {self.ports}, "
                           f"{self.supervisor.restarts} restarts"}
