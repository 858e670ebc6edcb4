"""Test doubles for the driver: an in-memory agent and a recording port publisher.

The fake agent answers with the same documents and raises the same exceptions as
:class:`cilium_py.docker.agent_api.HTTPAgentAPI`, so handlers are tested against the
agent contract without a socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cilium_py.docker.ports import Binding, Request
from cilium_py.errors import CiliumPyError, Conflict, InvalidInput, NotFound, PoolExhausted

POOL4 = "10.201.0.0/16"
POOL6 = "fd10:201::/112"


@dataclass
class FakeAgent:
    pool4: str | None = POOL4
    pool6: str | None = POOL6
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    reservations: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: dict[str, CiliumPyError] = field(default_factory=dict)
    docker_support: bool = True
    _next: dict[int, int] = field(default_factory=lambda: {4: 2, 6: 2})

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def _router(self, family: int) -> str | None:
        pool = self.pool4 if family == 4 else self.pool6
        return str(ipaddress.ip_network(pool)[1]) if pool else None

    def _taken(self) -> set[str]:
        used = set(self.reservations)
        for ep in self.endpoints.values():
            used |= {a for a in ep["addressing"].values() if a}
        return used

    def _allocate(self, family: int, wanted: str | None) -> str:
        pool = self.pool4 if family == 4 else self.pool6
        if pool is None:
            raise InvalidInput(f"agent: IPv{family} is turned off on this node")
        net = ipaddress.ip_network(pool)
        if wanted:
            if ipaddress.ip_address(wanted) not in net:
                raise InvalidInput(f"agent: {wanted} is outside the pool {net}")
            if wanted in self._taken():
                raise Conflict(f"agent: address {wanted} is in use")
            return wanted
        while True:
            candidate = str(net[self._next[family]])
            self._next[family] += 1
            if self._next[family] >= net.num_addresses:
                raise PoolExhausted(f"agent: the IPv{family} pool {net} is exhausted")
            if candidate not in self._taken():
                return candidate

    # -- AgentAPI --------------------------------------------------------------------

    def put_endpoint(self, ep_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("put_endpoint", (ep_id, body)))
        self._maybe_fail("put_endpoint")
        if ep_id in self.endpoints:
            return self.endpoints[ep_id]
        addressing: dict[str, str | None] = {}
        for family, key in ((4, "ipv4"), (6, "ipv6")):
            wanted = (body.get("addressing") or {}).get(key)
            if wanted and wanted in self.reservations:
                del self.reservations[wanted]  # adopted
            pool = self.pool4 if family == 4 else self.pool6
            addressing[key] = self._allocate(family, wanted) if pool else None
        ep = {
            "id": ep_id, "container-id": body.get("container-id", ""),
            "container-name": body.get("container-name", ""),
            "interface-name": body.get("interface-name", "eth0"), "netns": body.get("netns"),
            "host-interface": "lxc" + ep_id[:12], "ifindex": 40 + len(self.endpoints),
            "mac": "02:00:00:00:00:%02x" % (len(self.endpoints) + 1),
            "host-mac": "02:00:00:00:01:01",
            "addressing": addressing,
            "gateway": {"ipv4": self._router(4), "ipv6": self._router(6)},
            "routes": self._routes(),
            "labels": list(body.get("labels") or []), "identity": 5, "state": "ready",
        }
        if self.docker_support and body.get("docker"):
            ep["container-interface"] = "tmp" + ep_id[:11]
        self.endpoints[ep_id] = ep
        return ep

    def _routes(self) -> list[dict[str, Any]]:
        routes: list[dict[str, Any]] = []
        gw4, gw6 = self._router(4), self._router(6)
        if gw4:
            routes += [{"family": 4, "dst": f"{gw4}/32", "gateway": None, "scope": "link"},
                       {"family": 4, "dst": "0.0.0.0/0", "gateway": gw4, "scope": "global"}]
        if gw6:
            routes += [{"family": 6, "dst": f"{gw6}/128", "gateway": None, "scope": "global"},
                       {"family": 6, "dst": "::/0", "gateway": gw6, "scope": "global"}]
        return routes

    def get_endpoint(self, ep_id: str) -> dict[str, Any]:
        self.calls.append(("get_endpoint", ep_id))
        self._maybe_fail("get_endpoint")
        if ep_id not in self.endpoints:
            raise NotFound(f"agent: endpoint {ep_id} not found")
        return self.endpoints[ep_id]

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self.endpoints.values())

    def delete_endpoint(self, ep_id: str) -> bool:
        self.calls.append(("delete_endpoint", ep_id))
        self._maybe_fail("delete_endpoint")
        return self.endpoints.pop(ep_id, None) is not None

    def set_labels(self, ep_id: str, labels: list[str]) -> dict[str, Any]:
        self.calls.append(("set_labels", (ep_id, labels)))
        ep = self.get_endpoint(ep_id)
        ep["labels"] = list(labels)
        ep["identity"] = 256 if labels else 5
        return ep

    def ipam_status(self) -> dict[str, Any]:
        self.calls.append(("ipam_status", None))
        self._maybe_fail("ipam_status")
        pools: dict[str, Any] = {}
        for family, pool in ((4, self.pool4), (6, self.pool6)):
            name = f"ipv{family}"
            if pool is None:
                pools[name] = {"enabled": False}
            else:
                pools[name] = {"enabled": True, "pool": pool, "router": self._router(family),
                               "used": 0, "free": 100, "total": 100}
        return {"pools": pools, "allocations": {}}

    def reserve(self, family: int, owner: str, address: str | None = None) -> dict[str, Any]:
        self.calls.append(("reserve", (family, owner, address)))
        self._maybe_fail("reserve")
        addr = self._allocate(family, address)
        self.reservations[addr] = owner
        pool = self.pool4 if family == 4 else self.pool6
        return {"address": addr, "pool": pool, "gateway": self._router(family)}

    def release(self, address: str) -> None:
        self.calls.append(("release", address))
        self._maybe_fail("release")
        self.reservations.pop(address, None)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class FakePublisher:
    published: dict[str, list[Binding]] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    next_port: int = 49153

    def publish(self, eid: str, ipv4: str | None, ipv6: str | None,
                requests: Sequence[Request]) -> list[Binding]:
        out = []
        for req in requests:
            port = req.host_port
            if not port:
                port, self.next_port = self.next_port, self.next_port + 1
            out.append(Binding(req.proto, req.port, req.host_ip, port))
        self.published[eid] = out
        return out

    def revoke(self, eid: str) -> None:
        self.revoked.append(eid)
        self.published.pop(eid, None)


@dataclass
class FakeIsolation:
    isolated: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)

    def isolate(self, eid: str, addresses: Iterable[tuple[int, str, str]]) -> None:
        self.isolated[eid] = list(addresses)

    def release(self, eid: str) -> None:
        self.released.append(eid)
        self.isolated.pop(eid, None)
