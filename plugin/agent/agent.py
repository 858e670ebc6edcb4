"""The agent: the one owner of state on a host.

It holds the store and, as later subsystems land, the IPAM, endpoint manager, identity
allocator, policy repository and datapath. API handlers only call methods here; nothing
else in the process writes the store or the kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import AgentConfig
from ..logs import get_logger
from ..store import Store, open_store
from . import prereqs

log = get_logger("agent")

HealthProbe = Callable[[], dict[str, Any]]


class Agent:
    def __init__(self, config: AgentConfig, store: Store | None = None) -> None:
        self.config = config
        self.started = time.monotonic()
        self.store = store or open_store(config.store, config.state_dir)
        self._probes: dict[str, HealthProbe] = {}
        self.register_probe("store", self._store_health)
        self.register_probe("datapath-prerequisites", self._prereq_health)

    def register_probe(self, name: str, probe: HealthProbe) -> None:
        """Subsystems add themselves to /v1/healthz as they come up."""
        self._probes[name] = probe

    def _store_health(self) -> dict[str, Any]:
        try:
            details = self.store.status()
        except Exception as exc:  # noqa: BLE001 - health must report, not raise
            return {"status": "failure", "message": f"store unreachable: {exc}"}
        return {"status": "ok", "message": "store reachable", "details": details}

    def _prereq_health(self) -> dict[str, Any]:
        checks = [
            prereqs.check_bpffs(self.config.bpf_root),
            prereqs.check_bcc(),
            prereqs.check_kernel_headers(),
        ]
        failing = [c for c in checks if not c.ok]
        return {
            "status": "failure" if failing else "ok",
            "message": "; ".join(c.message for c in failing) or "all prerequisites met",
            "details": {c.name: c.to_dict() for c in checks},
        }

    def health(self) -> dict[str, Any]:
        subsystems = {name: probe() for name, probe in self._probes.items()}
        states = {s["status"] for s in subsystems.values()}
        overall = "failure" if "failure" in states else "degraded" if "degraded" in states else "ok"
        return {
            "status": overall,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "subsystems": subsystems,
        }

    def shutdown(self) -> None:
        log.info("agent stopping")
        self.store.close()
