"""The libnetwork IpamDriver: Docker's addresses come from the agent's pools.

There is one pool per family, the agent's; every cilium-py network shares it, as all
endpoints on a node share the agent's router. So ``RequestPool`` only *names* the
agent's pool (a user ``--subnet`` that differs is refused, because the agent's routes,
BPF maps and masquerading only know that prefix), and addresses are reserved in the
agent's IPAM under a ``docker:`` owner until CreateEndpoint's endpoint adopts them.

Addresses are handed out as host routes (``/32`` and ``/128``): the container then has
no on-link neighbours and sends everything to the gateway, which is what the agent's
datapath expects (it routes, it does not bridge). Join supplies the connected route to
the gateway that makes this work.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from ..errors import InvalidInput
from ..logs import get_logger
from .agent_api import AgentAPI
from .protocol import (
    GATEWAY_ADDRESS_TYPE,
    GLOBAL_ADDRESS_SPACE,
    LOCAL_ADDRESS_SPACE,
    OPT_REQUEST_ADDRESS_TYPE,
    DriverError,
    require_str,
)
from .state import DriverState

log = get_logger("docker.ipam")

FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}
POOL_IDS = {4: "CiliumPyPoolv4", 6: "CiliumPyPoolv6"}
FAMILY_OF_POOL_ID = {v: k for k, v in POOL_IDS.items()}
HOST_PREFIX = {4: 32, 6: 128}


def host_cidr(address: str) -> str:
    """``10.0.0.7`` -> ``10.0.0.7/32``; ``fd10::7`` -> ``fd10::7/128``."""
    ip = ipaddress.ip_address(address.split("/")[0])
    return f"{ip}/{HOST_PREFIX[ip.version]}"


class IpamDriver:
    def __init__(self, agent: AgentAPI, state: DriverState) -> None:
        self.agent = agent
        self.state = state
        # The agent's pools by family, as last seen. A pool changes only when the agent
        # restarts with another configuration, but RequestAddress runs on every
        # ``docker run``: asking ``GET /v1/ipam`` there (which also lists every
        # allocation) cost a round trip per container. RequestPool refreshes it, and
        # each reservation's answer names the pool and router it came from.
        self._pools: dict[int, dict[str, Any]] = {}

    # -- discovery -------------------------------------------------------------------

    def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # No MAC needed to pick an address; dockerd need not replay requests on restart
        # because the agent keeps the allocations.
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def default_address_spaces(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE,
        }

    # -- pools -----------------------------------------------------------------------

    def _agent_pool(self, family: int, fresh: bool = False) -> dict[str, Any]:
        """The agent's pool of ``family`` (``pool``, ``router``); asks the agent when
        ``fresh``, when nothing is cached, or when the cached answer is a refusal."""
        pool = None if fresh else self._pools.get(family)
        if not pool or not pool.get("enabled") or not pool.get("pool"):
            pools = self.agent.ipam_status().get("pools") or {}
            self._pools = {f: dict(pools.get(name) or {}) for f, name in FAMILY_NAMES.items()}
            pool = self._pools[family]
        if not pool.get("enabled") or not pool.get("pool"):
            raise DriverError(
                f"the cilium-py agent has no {FAMILY_NAMES[family]} pool configured; "
                f"start it with --{FAMILY_NAMES[family]}-pool to use "
                f"{'--ipv6 ' if family == 6 else ''}networks"
            )
        return pool

    def _learn_pool(self, family: int, reservation: dict[str, Any]) -> None:
        """Keep the cache equal to what the agent just answered with."""
        pool, router = reservation.get("pool"), reservation.get("gateway")
        cached = self._pools.get(family) or {}
        if pool and router and (cached.get("pool"), cached.get("router")) != (pool, router):
            self._pools = {**self._pools,
                           family: {"enabled": True, "pool": pool, "router": router}}

    def request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        space = body.get("AddressSpace") or ""
        wanted = body.get("Pool") or ""
        sub = body.get("SubPool") or ""
        if space not in ("", LOCAL_ADDRESS_SPACE, GLOBAL_ADDRESS_SPACE):
            raise InvalidInput(f"unknown address space {space!r}")
        if sub and not wanted:
            raise InvalidInput("SubPool given without Pool")
        family = 6 if body.get("V6") else 4
        if wanted:
            try:
                family = ipaddress.ip_network(wanted, strict=False).version
            except ValueError as exc:
                raise InvalidInput(f"Pool {wanted!r} is not a CIDR prefix: {exc}") from exc
        pool = self._agent_pool(family, fresh=True)
        agent_net = ipaddress.ip_network(pool["pool"])
        for label, text in (("--subnet", wanted), ("--ip-range", sub)):
            if text and ipaddress.ip_network(text, strict=False) != agent_net:
                raise DriverError(
                    f"{label} {text} is not a cilium-py pool: networks of the cilium-py IPAM "
                    f"driver use the agent's {FAMILY_NAMES[family]} pool {agent_net}; "
                    f"omit {label} or pass exactly {agent_net}"
                )
        pool_id = POOL_IDS[family]
        with self.state.edit() as doc:
            doc["pools"][pool_id] = int(doc["pools"].get(pool_id, 0)) + 1
        return {
            "PoolID": pool_id,
            "Pool": str(agent_net),
            "Data": {GATEWAY_ADDRESS_TYPE: f"{pool['router']}/{agent_net.prefixlen}"},
        }

    def release_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = require_str(body, "PoolID")
        with self.state.edit() as doc:
            count = int(doc["pools"].get(pool_id, 0)) - 1
            if count > 0:
                doc["pools"][pool_id] = count
            else:
                doc["pools"].pop(pool_id, None)
        return {}

    # -- addresses -------------------------------------------------------------------

    def _family_of(self, pool_id: str) -> int:
        family = FAMILY_OF_POOL_ID.get(pool_id)
        if family is None:
            raise InvalidInput(f"unknown PoolID {pool_id!r}: not a cilium-py pool")
        return family

    def request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = require_str(body, "PoolID")
        family = self._family_of(pool_id)
        wanted = body.get("Address") or ""
        options = body.get("Options") or {}
        pool = self._agent_pool(family)
        router = str(ipaddress.ip_address(pool["router"]))
        if wanted:
            try:
                wanted = str(ipaddress.ip_address(wanted.split("/")[0]))
            except ValueError as exc:
                raise InvalidInput(f"Address {wanted!r} is not an IP address") from exc
        is_gateway = options.get(OPT_REQUEST_ADDRESS_TYPE) == GATEWAY_ADDRESS_TYPE
        if is_gateway or (wanted and wanted == router):
            if wanted and wanted != router:
                raise DriverError(
                    f"--gateway {wanted} is not possible: the gateway of cilium-py networks "
                    f"is the agent's router address {router}; omit --gateway"
                )
            # The gateway is the agent's router: nothing to reserve.
            return {"Address": host_cidr(router), "Data": {}}
        owner = f"docker:{pool_id}:{secrets.token_hex(6)}"
        reservation = self.agent.reserve(family, owner, wanted or None)
        self._learn_pool(family, reservation)
        address = reservation["address"]
        log.debug("address reserved", extra={"fields": {"address": address, "owner": owner}})
        return {"Address": host_cidr(address), "Data": {}}

    def release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = require_str(body, "PoolID")
        family = self._family_of(pool_id)
        address = require_str(body, "Address").split("/")[0]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise InvalidInput(f"Address {address!r} is not an IP address") from exc
        pool = self._agent_pool(family)
        if ip == ipaddress.ip_address(pool["router"]):
            return {}  # the gateway was never reserved
        self.agent.release(str(ip))
        return {}
