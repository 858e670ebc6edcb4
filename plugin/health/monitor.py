"""The connectivity monitor: is every endpoint and every node reachable, and how fast.

Each agent keeps a health endpoint: an endpoint like any other, in a network namespace
the agent creates, with the reserved identity ``health`` (4) and a responder on TCP port
4240. On an interval the agent probes, with an ICMP echo and a TCP connect:

- from the node: every local endpoint (the host may always reach them, so a failure
  means the datapath or the container's interface is broken) and the other nodes;
- from inside the health endpoint: the other nodes' health endpoints, so those probes
  take the path endpoint traffic takes (the overlay, the remote node's policy).

Results (reachable, latency, error, time of the probe) are in ``GET /v1/health`` and
``cilium-py health status``; every probe is counted in the metrics and a target that
stops answering is logged once, and again when it is back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..logs import get_logger
from .probe import ProbeFailed, icmp_echo, tcp_connect

log = get_logger("health")

HEALTH_ENDPOINT_ID = "cilium-health"
HEALTH_PORT = 4240
HEALTH_LABELS = ["reserved:health"]


def health_netns_name(state_dir: str) -> str:
    """One name per agent (several agents on one machine each have their own)."""
    if state_dir.rstrip("/") == "/var/lib/cilium-py":
        return "cilium-py-health"
    return "cpyh-" + hashlib.sha256(state_dir.encode()).hexdigest()[:10]


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reachable": self.ok, "latency-ms": self.latency_ms, "error": self.error}


@dataclass
class TargetStatus:
    name: str
    kind: str  # "endpoint" | "node" | "health-endpoint"
    address: str
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    last_probe: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.probes) and all(p.ok for p in self.probes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "address": self.address,
            "reachable": self.ok,
            "probes": {k: v.to_dict() for k, v in sorted(self.probes.items())},
            "last-probe": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_probe))
                           if self.last_probe else None),
        }


def _probe(kind: str, address: str, timeout: float) -> ProbeResult:
    try:
        if kind == "icmp":
            seconds = icmp_echo(address, timeout)
        else:
            seconds = tcp_connect(address, HEALTH_PORT, timeout)
    except ProbeFailed as exc:
        return ProbeResult(False, error=str(exc))
    return ProbeResult(True, latency_ms=round(seconds * 1000, 3))


class HealthMonitor:
    def __init__(self, agent: Any, interval: float = 30.0, timeout: float = 1.0) -> None:
        self.agent = agent
        self.interval = interval
        self.timeout = timeout
        self.netns = health_netns_name(agent.config.state_dir)
        self.endpoint: Any = None
        self._results: dict[str, dict[str, TargetStatus]] = {}  # per prober loop
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responder: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Create (or take back after a restart) the health endpoint, then probe."""
        from pyroute2 import netns as pnetns

        if self.netns not in pnetns.listnetns():
            pnetns.create(self.netns)
        path = f"/var/run/netns/{self.netns}"
        self.endpoint, _ = self.agent.endpoints.create(HEALTH_ENDPOINT_ID, {
            "netns": path, "interface_name": "eth0", "labels": HEALTH_LABELS,
            "container_name": "cilium-health",
        })
        ready = threading.Event()
        for name, target in (("cpy-health-responder", lambda: self._respond(ready)),
                             ("cpy-health-local", self._local_loop),
                             ("cpy-health-remote", self._remote_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        ready.wait(5)
        log.info("health endpoint ready", extra={"fields": {
            "netns": self.netns, "addressing": self.endpoint.addressing}})

    def stop(self) -> None:
        """Stop probing; the health endpoint stays, like every endpoint, for the next
        agent (removing it would make the node look unreachable to the others)."""
        self._stop.set()
        if self._responder is not None:
            self._responder.close()
        for t in self._threads:
            t.join(timeout=5)

    @property
    def addresses(self) -> dict[str, str | None]:
        if self.endpoint is None:
            return {"ipv4": None, "ipv6": None}
        return {"ipv4": self.endpoint.addressing.get("ipv4"),
                "ipv6": self.endpoint.addressing.get("ipv6")}

    # -- the responder, inside the health namespace ------------------------------------

    def _respond(self, ready: threading.Event) -> None:
        import socket

        from pyroute2 import netns as pnetns

        pnetns.setns(self.netns)  # this thread only: the listener lives in the namespace
        srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind(("::", HEALTH_PORT))
        srv.listen(64)
        srv.settimeout(0.5)
        self._responder = srv
        ready.set()
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.sendall(b"OK\n")
            except OSError:
                pass
            finally:
                conn.close()

    # -- probing -----------------------------------------------------------------------

    def _local_targets(self) -> list[tuple[str, str, str]]:
        out = []
        for ep in self.agent.endpoints.list():
            for fam in ("ipv4", "ipv6"):
                addr = ep.addressing.get(fam)
                if addr:
                    kind = "health-endpoint" if ep.id == HEALTH_ENDPOINT_ID else "endpoint"
                    out.append((f"{kind}/{ep.id}/{fam}", kind, addr))
        cluster = getattr(self.agent, "cluster", None)
        if cluster is not None and cluster.registry is not None:
            for node in cluster.registry.remote_nodes():
                out.append((f"node/{node.name}", "node", node.address))
        return out

    def _remote_targets(self) -> list[tuple[str, str, str]]:
        cluster = getattr(self.agent, "cluster", None)
        if cluster is None or cluster.registry is None:
            return []
        out = []
        for node in cluster.registry.remote_nodes():
            for fam, addr in (("ipv4", node.health_ipv4), ("ipv6", node.health_ipv6)):
                if addr:
                    out.append((f"health-endpoint/{node.name}/{fam}", "health-endpoint", addr))
        return out

    def _loop(self, which: str, targets: Callable[[], list[tuple[str, str, str]]]) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._probe_all(which, targets())
            except Exception:  # noqa: BLE001 - probing must go on; the log says why
                log.exception("health probing failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _local_loop(self) -> None:
        self._loop("local", self._local_targets)

    def _remote_loop(self) -> None:
        from pyroute2 import netns as pnetns

        pnetns.setns(self.netns)  # probes leave through the health endpoint
        self._loop("remote", self._remote_targets)

    def _probe_all(self, which: str, targets: list[tuple[str, str, str]]) -> None:
        """Probe every target of one loop; its results replace that loop's last ones
        (targets that went away disappear)."""
        results: dict[str, TargetStatus] = {}
        for name, kind, addr in targets:
            status = TargetStatus(name, kind, addr)
            for probe in ("icmp", "tcp"):
                result = _probe(probe, addr, self.timeout)
                status.probes[probe] = result
                self.agent.metrics.health_probe(name, probe, result.ok,
                                                (result.latency_ms or 0) / 1000)
            status.last_probe = time.time()
            results[name] = status
            with self._lock:
                before = self._results.get(which, {}).get(name)
            if before is not None and before.ok != status.ok:
                fields = {"target": name, "address": addr,
                          "errors": {k: p.error for k, p in status.probes.items() if p.error}}
                if status.ok:
                    log.info("health target reachable again", extra={"fields": fields})
                else:
                    log.warning("health target unreachable", extra={"fields": fields})
        with self._lock:
            self._results[which] = results

    def status(self) -> dict[str, Any]:
        with self._lock:
            merged = {n: t for res in self._results.values() for n, t in res.items()}
        targets = [t.to_dict() for _, t in sorted(merged.items())]
        return {
            "interval-seconds": self.interval,
            "health-endpoint": {"netns": self.netns, **self.addresses},
            "targets": targets,
            "reachable": sum(1 for t in targets if t["reachable"]),
            "unreachable": sum(1 for t in targets if not t["reachable"]),
        }
