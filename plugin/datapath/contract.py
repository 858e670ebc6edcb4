"""The datapath as the rest of the agent sees it: the one list of what it may call.

Why: the agent, its policy manager, the API routes, the metrics collector and the
cluster node all hold the datapath. Holding it as :class:`DatapathContract` instead of
``Any`` makes every call a visible, typed part of a contract: new capabilities (L7
redirects, load balancing, cluster routes) add their methods here first, and the
implementation (:class:`~cilium_py.datapath.datapath.Datapath`, compiled with bcc)
follows. ``tests/unit/datapath/test_contract.py`` checks that the implementation
has every method with the same parameters, and mypy checks the types.

Only what callers outside ``datapath`` use belongs here; tests may reach further into
the implementation (``map_ids``, ``attachment``, ``purge``), the agent may not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .endpoint import EndpointDatapathInfo
from .lb import LbBackendSpec, LbFrontend

if TYPE_CHECKING:
    from ..policy.resolve import ResolvedPolicy


class EndpointRecord(Protocol):
    """What the datapath reads of an endpoint: the agent's ``Endpoint`` has it.

    Read-only properties, so that any record with these attributes (a dataclass
    with plain fields included) satisfies it.
    """

    @property
    def id(self) -> str: ...
    @property
    def ifindex(self) -> int: ...
    @property
    def mac(self) -> str: ...
    @property
    def host_mac(self) -> str: ...
    @property
    def identity(self) -> int: ...
    @property
    def ipv4(self) -> str | None: ...
    @property
    def ipv6(self) -> str | None: ...


#: An endpoint as the datapath takes it: the agent's record, or the datapath's own.
DatapathEndpoint = EndpointRecord | EndpointDatapathInfo

#: One datapath event (drop, trace, policy verdict) as a JSON-ready dict.
EventCallback = Callable[[dict[str, Any]], None]


@runtime_checkable
class DatapathContract(Protocol):
    """Everything the agent and its API may ask of the datapath."""

    # -- lifecycle -------------------------------------------------------------

    @property
    def compile_seconds(self) -> float:
        """How long the last compile took (0.0 before ``start``)."""
        ...

    @property
    def prog_ids(self) -> dict[str, int]:
        """Kernel ids of the loaded programs, by program name."""
        ...

    def start(self) -> None:
        """Compile once, reuse or create the pinned maps, load the programs."""
        ...

    def close(self) -> None:
        """Release fds; programs and pinned maps stay (they outlive the agent)."""
        ...

    def flush_orphans(self, keep_ifindexes: set[int]) -> int:
        """Remove endpoint entries for interfaces not in ``keep_ifindexes``; count."""
        ...

    # -- endpoints -------------------------------------------------------------

    def attach_endpoint(self, ep: DatapathEndpoint) -> None:
        """Write the endpoint's entries and attach the programs to its host veth."""
        ...

    def detach_endpoint(self, ep: DatapathEndpoint, *, programs: bool = True) -> None:
        """Detach (when ``programs``) and remove the endpoint's entries; idempotent."""
        ...

    def endpoint_entries(self) -> list[dict[str, Any]]:
        """The endpoint map as the kernel holds it."""
        ...

    # -- policy and identities -------------------------------------------------

    def set_policy(self, ep: DatapathEndpoint, resolved: ResolvedPolicy) -> dict[str, Any]:
        """Enforce ``resolved`` for ``ep``; counts of entries added/changed/removed."""
        ...

    def policy_entries(self, ep: DatapathEndpoint) -> list[dict[str, Any]]:
        """The endpoint's policy entries as the kernel holds them."""
        ...

    def set_ipcache(self, mapping: dict[str, int]) -> dict[str, int]:
        """Make the ipcache hold exactly ``mapping`` (prefix -> identity)."""
        ...

    def update_ipcache(self, upsert: dict[str, int], remove: list[str]) -> dict[str, int]:
        """Change only the given ipcache prefixes."""
        ...

    def ipcache_entries(self) -> list[dict[str, Any]]:
        ...

    # -- cluster ---------------------------------------------------------------

    def attach_overlay(self, ifindex: int) -> None:
        """Attach the overlay program to the tunnel device."""
        ...

    def set_tunnel_routes(self, ranges: dict[str, str]) -> dict[str, int]:
        """Remote endpoint ranges -> their node's address (the full desired set)."""
        ...

    def tunnel_entries(self) -> list[dict[str, Any]]:
        ...

    # -- load balancing (bpf/lib/lb.h) -------------------------------------------

    def set_service(self, svc_id: int, frontend: LbFrontend, backends: list[LbBackendSpec],
                    affinity_timeout: int = 0,
                    old_frontend: LbFrontend | None = None) -> dict[str, int]:
        """Balance ``frontend`` over ``backends``, replacing what the service had."""
        ...

    def delete_service(self, svc_id: int, frontend: LbFrontend) -> None:
        """Stop balancing ``frontend``."""
        ...

    def flush_services(self, keep: dict[int, LbFrontend]) -> int:
        """Remove frontends and backends no service in ``keep`` owns; count."""
        ...

    def lb_entries(self) -> list[dict[str, Any]]:
        """Frontends with their backend slots, as the kernel holds them."""
        ...

    def lb_connections(self) -> list[dict[str, Any]]:
        """Balanced connections: client, frontend, chosen backend."""
        ...

    # -- socket-level load balancing (bpf/bpf_sock.c) ---------------------------

    def attach_socket_lb(self, cgroup: str) -> dict[str, Any]:
        """Balance this namespace's sockets of processes in ``cgroup`` at connect."""
        ...

    def detach_socket_lb(self) -> int:
        """Detach the socket programs; how many hooks were attached."""
        ...

    def socket_lb_status(self) -> dict[str, Any]:
        """The cgroup socket LB is attached to (None: off) and each hook's link."""
        ...

    # -- conntrack -------------------------------------------------------------

    def ct_entries(self) -> list[dict[str, Any]]:
        ...

    def flush_ct(self, addresses: list[str] | None = None) -> int:
        """Delete the entries touching ``addresses`` (all when None); count."""
        ...

    def flush_ct_ports(self, addresses: list[str], ports: list[tuple[str, int]]) -> int:
        """Cut connections of ``addresses`` on ``ports`` (policy removed them); count."""
        ...

    def gc_ct(self) -> int:
        """Expire conntrack entries past their lifetime; count removed."""
        ...

    # -- counters and events ---------------------------------------------------

    def drop_counters(self) -> dict[str, int]:
        ...

    def drop_counters_detail(self) -> list[dict[str, Any]]:
        ...

    def metrics(self) -> dict[str, dict[str, int]]:
        """Forwarding counters by path: packets and bytes."""
        ...

    def subscribe_drops(self, callback: EventCallback) -> None:
        """Call ``callback`` from the event reader's thread for each event."""
        ...

    def set_trace_events(self, bits: int) -> None:
        """Trace / policy-verdict events on or off (``trace_events.gate_bits``)."""
        ...

    def trace_events_enabled(self) -> list[str]:
        """Which of those event types the datapath emits now (read from the kernel)."""
        ...
