"""Services: validated against the node's state, stored, written to the datapath.

The store is the source of truth: a service is stored before its map entries
are written, so a crash in between is repaired by ``restore`` on the next
start, which rewrites every stored service and removes map entries no stored
service owns. Maps are pinned, so balanced connections keep flowing while no
agent runs.

Refused (409, naming ``frontend-address``): a frontend that is a local
endpoint's or the router's address, and a frontend (address, port, protocol)
another service already has.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable

from ..datapath.contract import DatapathContract
from ..errors import Conflict, NotFound, Unavailable
from ..logs import get_logger
from ..store import Store
from .model import Service

log = get_logger("service")

KEY_PREFIX = "cilium-py/services/"


class ServiceManager:
    def __init__(self, store: Store, datapath: DatapathContract | None,
                 reserved_addresses: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """``reserved_addresses()`` yields (address, what) pairs a frontend may not use."""
        self.store = store
        self.datapath = datapath
        self.reserved_addresses = reserved_addresses
        self._lock = threading.RLock()
        self._cache: dict[int, Service] | None = None
        self._frontends: dict[tuple[str, int, str], int] = {}

    def _key(self, svc_id: int) -> str:
        return f"{KEY_PREFIX}{svc_id}"

    def _services(self) -> dict[int, Service]:
        """By id: read from the store once, then kept in step (the agent is the only
        writer of its services), so that a clash check is no scan of the store."""
        if self._cache is None:
            cache: dict[int, Service] = {}
            for kv in self.store.list(KEY_PREFIX):
                try:
                    svc = Service.from_json(kv.value)
                except Exception:  # noqa: BLE001 - one bad record must not hide the rest
                    log.exception("unreadable service record",
                                  extra={"fields": {"key": kv.key}})
                    continue
                cache[svc.id] = svc
            self._cache = cache
            self._frontends = {s.frontend_key: s.id for s in cache.values()}
        return self._cache

    def list(self) -> list[Service]:
        with self._lock:
            return sorted(self._services().values(), key=lambda s: s.id)

    def get(self, svc_id: int) -> Service:
        with self._lock:
            svc = self._services().get(svc_id)
        if svc is None:
            raise NotFound(f"service {svc_id} not found", {"id": "no such service"})
        return svc

    def _remember(self, svc: Service, old: Service | None) -> None:
        services = self._services()
        if old is not None:
            self._frontends.pop(old.frontend_key, None)
            services.pop(old.id, None)
        services[svc.id] = svc
        self._frontends[svc.frontend_key] = svc.id

    def _forget(self, svc: Service) -> None:
        self._services().pop(svc.id, None)
        self._frontends.pop(svc.frontend_key, None)

    def _check(self, svc: Service) -> None:
        for address, what in self.reserved_addresses():
            if str(ipaddress.ip_address(address)) == svc.ip:
                raise Conflict(f"frontend {svc.ip} is {what}'s address",
                               {"frontend-address.ip": f"address of {what}"})
        self._services()
        other = self._frontends.get(svc.frontend_key)
        if other is not None and other != svc.id:
            raise Conflict(
                f"frontend {svc.ip} port {svc.port}/{svc.protocol} belongs to service "
                f"{other}", {"frontend-address": f"used by service {other}"})

    def upsert(self, svc: Service) -> tuple[Service, bool]:
        """Create or replace a service; True when it is new."""
        with self._lock:
            if self.datapath is None:
                raise Unavailable("the BPF datapath is not running: services cannot be "
                                  "balanced")
            self._check(svc)
            old = self._services().get(svc.id)
            self.store.put(self._key(svc.id), svc.to_json())
            try:
                self._write(svc, old)
                self._remember(svc, old)
            except Exception:
                # Never half-made: put back what was there (store and maps).
                if old is None:
                    self.store.delete(self._key(svc.id))
                    self.datapath.delete_service(svc.id, svc.lb_frontend())
                else:
                    self.store.put(self._key(svc.id), old.to_json())
                    self._write(old, svc)
                raise
            log.info("service %s", "updated" if old else "created", extra={"fields": {
                "id": svc.id, "frontend": f"{svc.ip}:{svc.port}/{svc.protocol}",
                "backends": len(svc.backends)}})
            return svc, old is None

    def _write(self, svc: Service, old: Service | None) -> None:
        if self.datapath is None:
            raise Unavailable("the BPF datapath is not running")
        self.datapath.set_service(
            svc.id, svc.lb_frontend(), svc.lb_backends(), svc.lb_affinity_timeout,
            old.lb_frontend() if old is not None else None)

    def delete(self, svc_id: int) -> None:
        with self._lock:
            svc = self.get(svc_id)
            if self.datapath is not None:
                self.datapath.delete_service(svc.id, svc.lb_frontend())
            self.store.delete(self._key(svc_id))
            self._forget(svc)
            log.info("service deleted", extra={"fields": {"id": svc_id}})

    def restore(self) -> dict[str, int]:
        """After a start: every stored service into the maps, strays out of them."""
        with self._lock:
            services = self.list()
            written = 0
            for svc in services:
                try:
                    self._write(svc, None)
                    written += 1
                except Exception:  # noqa: BLE001 - report, keep restoring the others
                    log.exception("restoring service failed", extra={"fields": {"id": svc.id}})
            if self.datapath is None:
                return {"services": 0, "map-entries-removed": 0}
            removed = self.datapath.flush_services({s.id: s.lb_frontend() for s in services})
            return {"services": written, "map-entries-removed": removed}
