"""Layer 4 of a rule: ports, protocols and the ``toPorts`` entries that carry them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .l7 import L7Rules


class Protocol(IntEnum):
    """IP protocol numbers as the datapath keys them; ``ANY`` (0) covers TCP and UDP."""

    ANY = 0
    TCP = 6
    UDP = 17

    @classmethod
    def parse(cls, text: str) -> Protocol:
        """``TCP``/``UDP``/``ANY`` in any case (Cilium's Mesos guide writes ``tcp``)."""
        try:
            return cls[text.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"protocol must be one of TCP, UDP, ANY, not {text!r}") from None


MIN_PORT = 1
MAX_PORT = 65535


def parse_port(value: object) -> int:
    """A port from JSON: an int or a decimal string, 1-65535."""
    if isinstance(value, bool):
        raise ValueError("must be 1-65535")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError("must be 1-65535")
        value = int(value.strip())
    if not isinstance(value, int) or not MIN_PORT <= value <= MAX_PORT:
        raise ValueError("must be 1-65535")
    return value


def parse_port_protocol(text: str) -> tuple[int, Protocol]:
    """``80``, ``80/TCP`` or ``53/udp`` as given to ``policy trace --dport``."""
    port_text, _, proto_text = text.partition("/")
    port = parse_port(port_text)
    return port, Protocol.parse(proto_text) if proto_text else Protocol.ANY


@dataclass(frozen=True, slots=True)
class PortProtocol:
    """One ``{"port", "protocol"}`` entry."""

    port: int
    protocol: Protocol = Protocol.ANY

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.name}"

    def covers(self, port: int, protocol: Protocol) -> bool:
        """Whether traffic to ``port``/``protocol`` falls under this entry.

        A query for protocol ``ANY`` asks "is some protocol on this port allowed", so
        it is covered by a rule for any protocol on the port.
        """
        if port != self.port:
            return False
        return Protocol.ANY in (self.protocol, protocol) or self.protocol == protocol

    def to_dict(self) -> dict[str, str]:
        return {"port": str(self.port), "protocol": self.protocol.name}


@dataclass(frozen=True, slots=True)
class PortRule:
    """One ``toPorts`` entry: the ports it opens and, optionally, L7 rules for them."""

    ports: tuple[PortProtocol, ...]
    rules: L7Rules = field(default_factory=L7Rules)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ports": [p.to_dict() for p in self.ports]}
        if not self.rules.is_empty():
            out["rules"] = self.rules.to_dict()
        return out
