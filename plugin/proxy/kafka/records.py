"""The proxy's monitor records (``cilium-py monitor --type l7``).

One record per request the proxy decides on, and one per connection it closes for a
protocol error. They are plain dicts, the form the agent's event hub fans out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cilium_py.policy.kafka import api_name

L7 = "l7"
KAFKA = "kafka"

FORWARDED = "forwarded"
DENIED = "denied"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a proxied flow: address, port and security identity."""

    address: str
    port: int
    identity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "identity": self.identity}


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What every record of a connection repeats: who talks to whom, and where."""

    source: Peer
    destination: Peer
    direction: str = "ingress"
    endpoint: str | None = None

    def base(self, verdict: str) -> dict[str, Any]:
        return {
            "type": L7,
            "protocol": KAFKA,
            "verdict": verdict,
            "direction": self.direction,
            "endpoint": self.endpoint,
            "source": self.source.to_dict(),
            "destination": self.destination.to_dict(),
        }


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
) -> dict[str, Any]:
    record = flow.base(verdict)
    record["kafka"] = {
        "api-key": api_name(api_key).lower(),
        "api-key-number": api_key,
        "api-version": api_version,
        "correlation-id": correlation_id,
        "client-id": client_id,
        "topics": [t if t is not None else "(topic id)" for t in dict.fromkeys(topics)],
        "error-code": error_code,
    }
    if reason:
        record["reason"] = reason
    return record


def error_record(
    flow: FlowInfo,
    reason: str,
    message: str,
    *,
    api_key: int | None = None,
    api_version: int | None = None,
    correlation_id: int | None = None,
) -> dict[str, Any]:
    record = flow.base(ERROR)
    record["reason"] = reason
    record["message"] = message
    record["kafka"] = {
        "api-key": api_name(api_key).lower() if api_key is not None else None,
        "api-key-number": api_key,
        "api-version": api_version,
        "correlation-id": correlation_id,
    }
    return record


def format_record(record: dict[str, Any]) -> str:
    """One line for ``cilium-py monitor``: who, what, which topics, what happened."""
    src, dst, k = (
        record.get("source") or {},
        record.get("destination") or {},
        record.get("kafka") or {},
    )
    head = (
        f"kafka {record.get('verdict')} {src.get('address')}:{src.get('port')}"
        f" (identity {src.get('identity')}) -> {dst.get('address')}:{dst.get('port')}"
    )
    if record.get("verdict") == ERROR:
        return f"{head}: connection closed: {record.get('reason')}: {record.get('message')}"
    topics = ",".join(k.get("topics") or []) or "-"
    return (
        f"{head} {k.get('api-key')} v{k.get('api-version')} client={k.get('client-id')!s}"
        f" topics={topics} error={k.get('error-code')}"
    )
