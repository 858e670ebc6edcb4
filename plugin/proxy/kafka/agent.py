"""The Kafka proxy as the agent's proxy manager sees it (see :mod:`cilium_py.proxy`).

One transparent listener per direction on its proxy port (IPv4 and IPv6 wildcard),
served by one :class:`~.proxy.KafkaProxy` on its own event loop thread. For a
connection the datapath assigned to a listener:

- the original destination is the accepted socket's local address;
- the remote identity comes from the ipcache snapshot of the last update (the
  client's for ingress, the broker's for egress);
- the Kafka rules are the union of the redirect entries covering the connection
  (endpoint address, remote identity or any, port or any), looked up again for
  every request so policy changes reach open connections; none: every request is
  denied;
- the upstream leaves from the client's own address with the from-proxy mark, so the
  datapath applies the destination's policy to the client's identity (to addresses
  outside the endpoint pools: from the node's address, marked, as Envoy does).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cilium_py.policy import KafkaRule
from cilium_py.policy.kafka import KafkaPolicy

from ...logs import get_logger
from ..addresses import AddressSets
from ..marks import MARK_FROM_PROXY_EGRESS, MARK_FROM_PROXY_INGRESS
from ..records import L7Record
from ..redirects import INGRESS, Redirect
from .proxy import Flow, KafkaProxy, transparent_listener
from .records import FlowInfo, Peer
from .runner import ProxyThread

log = get_logger("kafka-proxy")

PARSERS = ("kafka",)
TCP = 6


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: int  # 0: any
    port: int  # 0: any
    rules: tuple[KafkaRule, ...]


class _Rules:
    """The redirect entries of one update, indexed by (direction, endpoint address)."""

    def __init__(self, redirects: Iterable[Redirect], sets: AddressSets) -> None:
        self.sets = sets
        self.by_address: dict[tuple[str, str], list[_Entry]] = {}
        for r in redirects:
            if r.rules.kafka is None or r.protocol not in (0, TCP):
                continue
            entry = _Entry(r.identity, r.port, r.rules.kafka)
            for address in r.addresses:
                key = (r.direction, _norm(address))
                self.by_address.setdefault(key, []).append(entry)
        self._cache: dict[tuple[str, str, int, int], KafkaPolicy | None] = {}

    def policy(self, direction: str, endpoint: str, remote: str, port: int) -> KafkaPolicy | None:
        identity = self.sets.identity_of(remote)
        key = (direction, endpoint, identity, port)
        if key not in self._cache:
            rules: list[KafkaRule] = []
            matched = False
            for e in self.by_address.get((direction, endpoint), ()):
                if e.identity in (0, identity) and e.port in (0, port):
                    matched = True
                    rules.extend(e.rules)
            self._cache[key] = KafkaPolicy.build(dict.fromkeys(rules)) if matched else None
        return self._cache[key]


def _norm(address: str) -> str:
    return str(ipaddress.ip_address(address.split("/")[0]))


class KafkaAgentProxy:
    """Start, update and stop the Kafka proxy for the proxy manager."""

    parsers = PARSERS

    def __init__(
        self,
        ports: Mapping[str, int],
        pool_prefixes: Iterable[tuple[str, int]],
        on_record: Callable[[L7Record], None],
        *,
        families: Iterable[int] = (4, 6),
    ) -> None:
        self.ports = dict(ports)
        self.pools = [ipaddress.ip_network(f"{a}/{n}") for a, n in pool_prefixes]
        self.families = tuple(families)
        self._rules = _Rules((), AddressSets({}))
        self._lock = threading.Lock()
        self._thread: ProxyThread | None = None
        self.proxy = KafkaProxy(_Resolver(self, INGRESS), on_record)
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = ProxyThread(self.proxy, name="kafka-proxy").start()
            try:
                for direction, port in sorted(self.ports.items()):
                    for family in self.families:
                        host = "0.0.0.0" if family == 4 else "::"
                        sock = transparent_listener(host, port)
                        thread.call(self.proxy.serve_socket(sock, _Resolver(self, direction)))
            except Exception as exc:
                thread.stop()
                self.error = f"cannot listen: {exc}"
                raise
            self._thread = thread
            self.error = None
            log.info("kafka proxy listening", extra={"fields": {"ports": self.ports}})

    def update(self, redirects: Iterable[Redirect], sets: AddressSets) -> None:
        rules = _Rules(redirects, sets)
        self._rules = rules  # one reference swap: connections see old or new, whole

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._thread.stop()
                self._thread = None

    def health(self) -> dict[str, Any]:
        if self._thread is None:
            return {"status": "failure", "message": self.error or "kafka proxy is not running"}
        s = self.proxy.stats
        return {
            "status": "ok",
            "message": f"kafka proxy ports {self.ports}: {s.connections} connections, "
            f"{s.forwarded} forwarded, {s.denied} denied, {s.errors} errors",
        }

    # -- per connection ---------------------------------------------------------

    def in_pools(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.pools)

    def flow(self, direction: str, client: tuple[str, int], local: tuple[str, int]) -> Flow:
        source = Peer(_norm(client[0]), client[1])
        destination = Peer(_norm(local[0]), local[1])
        if direction == INGRESS:
            endpoint, remote = destination.address, source.address
        else:
            endpoint, remote = source.address, destination.address

        def policy() -> KafkaPolicy | None:
            return self._rules.policy(direction, endpoint, remote, destination.port)

        mark = MARK_FROM_PROXY_INGRESS if direction == INGRESS else MARK_FROM_PROXY_EGRESS
        transparent = direction == INGRESS or self.in_pools(destination.address)
        return Flow(
            FlowInfo(source, destination, direction),
            (destination.address, destination.port),
            policy,
            transparent=transparent,
            mark=mark,
        )


class _Resolver:
    def __init__(self, owner: KafkaAgentProxy, direction: str) -> None:
        self.owner = owner
        self.direction = direction

    def resolve(self, client: tuple[str, int], local: tuple[str, int]) -> Flow:
        return self.owner.flow(self.direction, client, local)
