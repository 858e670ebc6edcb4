"""The proxy's monitor records (``cilium-py monitor --type l7``).

One :class:`~cilium_py.proxy.records.L7Record` per request the proxy decides on, and
one per connection it closes for a protocol error; the proxy manager adds identities
and endpoints and publishes them as ``l7`` events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cilium_py.policy.kafka import api_name

from ..records import DENIED, ERROR, FORWARDED, L7Record

KAFKA = "kafka"

__all__ = ["DENIED", "ERROR", "FORWARDED", "FlowInfo", "Peer", "error_record", "request_record"]


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a proxied flow."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What every record of a connection repeats: who talks to whom, whose rules."""

    source: Peer
    destination: Peer
    direction: str = "ingress"

    def record(self, verdict: str, fields: dict[str, Any]) -> L7Record:
        return L7Record(
            KAFKA,
            self.direction,
            self.source.address,
            self.source.port,
            self.destination.address,
            self.destination.port,
            verdict,
            time.time(),
            fields,
        )


def request_record(
    flow: FlowInfo,
    verdict: str,
    *,
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    topics: tuple[str | None, ...],
    error_code: int = 0,
    reason: str = "",
) -> L7Record:
    fields: dict[str, Any] = {
        "api-key": api_name(api_key).lower(),
        "api-key-number": api_key,
        "api-version": api_version,
        "correlation-id": correlation_id,
        "client-id": client_id,
        "topics": [t if t is not None else "(topic id)" for t in dict.fromkeys(topics)],
        "error-code": error_code,
    }
    if reason:
        fields["reason"] = reason
    return flow.record(verdict, fields)


def error_record(
    flow: FlowInfo,
    reason: str,
    message: str,
    *,
    api_key: int | None = None,
    api_version: int | None = None,
    correlation_id: int | None = None,
) -> L7Record:
    return flow.record(
        ERROR,
        {
            "api-key": api_name(api_key).lower() if api_key is not None else None,
            "api-key-number": api_key,
            "api-version": api_version,
            "correlation-id": correlation_id,
            "reason": reason,
            "message": message,
        },
    )
