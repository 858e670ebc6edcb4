"""What the datapath needs to know about one endpoint, and its numeric id.

Kept apart from the ``Datapath`` facade so that callers (the agent, tests) can build
the record without importing the facade's dependencies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


def numeric_endpoint_id(value: int | str) -> int:
    """The 32-bit endpoint id the datapath stores (events, entries).

    An int (or a decimal string) is used as is; any other string id is mapped
    to a stable number by hashing, so the same endpoint always gets the same id.
    """
    if isinstance(value, int):
        if not 0 <= value < 2**32:
            raise ValueError(f"endpoint id out of range: {value}")
        return value
    if value.isdigit() and int(value) < 2**32:
        return int(value)
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big") or 1


@dataclass(frozen=True)
class EndpointDatapathInfo:
    """What the datapath needs about one endpoint.

    ``ifindex``/``host_mac`` are the HOST side veth (in the node namespace),
    ``mac`` is the container side. ``ipv6_link_local`` is the address the
    container uses for neighbour discovery; by default the kernel's EUI-64
    address derived from ``mac``.
    """

    ifindex: int
    host_mac: str
    mac: str
    endpoint_id: int
    identity: int = 0
    ipv4: str | None = None
    ipv6: str | None = None
    ipv6_link_local: str | None = None

    @classmethod
    def from_endpoint(cls, ep: Any) -> EndpointDatapathInfo:
        """Accept an ``EndpointDatapathInfo`` or any endpoint record with the same
        attributes (``id`` instead of ``endpoint_id`` is mapped by
        ``numeric_endpoint_id``)."""
        if isinstance(ep, cls):
            return ep
        raw_id = getattr(ep, "endpoint_id", None)
        if raw_id is None:
            raw_id = ep.id
        return cls(
            ifindex=int(ep.ifindex),
            host_mac=ep.host_mac,
            mac=ep.mac,
            endpoint_id=numeric_endpoint_id(raw_id),
            identity=int(getattr(ep, "identity", 0) or 0),
            ipv4=getattr(ep, "ipv4", None) or None,
            ipv6=getattr(ep, "ipv6", None) or None,
            ipv6_link_local=getattr(ep, "ipv6_link_local", None) or None,
        )

    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]
