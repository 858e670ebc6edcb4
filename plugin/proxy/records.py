"""L7 records: one per request a proxy handled, protocol-neutral.

A proxy fills in what it saw on the wire (addresses, verdict, its protocol's fields);
the proxy manager adds endpoints and identities from the ipcache and publishes the
record as a monitor event of type ``l7``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORWARDED = "forwarded"
DENIED = "denied"
ERROR = "error"


@dataclass
class L7Record:
    parser: str  # "http", "kafka"
    direction: str  # "ingress" / "egress": which endpoint's rules were enforced
    source: str  # address of the client
    source_port: int
    destination: str  # original destination address
    destination_port: int
    verdict: str  # FORWARDED / DENIED / ERROR
    time: float
    fields: dict[str, Any] = field(default_factory=dict)  # the protocol's own

    def to_event(self) -> dict[str, Any]:
        return {
            "type": "l7",
            "time": self.time,
            "parser": self.parser,
            "direction": self.direction,
            "src": self.source,
            "sport": self.source_port,
            "dst": self.destination,
            "dport": self.destination_port,
            "verdict": self.verdict,
            self.parser: dict(self.fields),
        }


def split_address(text: str) -> tuple[str, int]:
    """``10.0.0.1:80`` / ``[fd10::1]:80`` -> (address, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        return text, 0
