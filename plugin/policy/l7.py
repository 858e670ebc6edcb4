"""Layer 7 rules (``toPorts[].rules``): parsed and carried now, enforced by the proxies.

Until a proxy for a parser runs, the resolver enforces such ports at L4 and says so;
the rules are kept intact so that the L7 work only has to consume them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HTTP = "http"
KAFKA = "kafka"

#: Kafka API keys by the names Cilium's ``apiKey`` field accepts.
KAFKA_API_KEYS: frozenset[str] = frozenset(
    {
        "produce", "fetch", "offsets", "metadata", "leaderandisr", "stopreplica",
        "updatemetadata", "controlledshutdown", "offsetcommit", "offsetfetch",
        "findcoordinator", "joingroup", "heartbeat", "leavegroup", "syncgroup",
        "describegroups", "listgroups", "saslhandshake", "apiversions", "createtopics",
        "deletetopics", "deleterecords", "initproducerid", "offsetforleaderepoch",
        "addpartitionstotxn", "addoffsetstotxn", "endtxn", "writetxnmarkers",
        "txnoffsetcommit", "describeacls", "createacls", "deleteacls",
        "describeconfigs", "alterconfigs",
    }
)  # fmt: skip
#: ``role`` shorthands: produce or consume (which imply sets of API keys).
KAFKA_ROLES: frozenset[str] = frozenset({"produce", "consume"})


@dataclass(frozen=True, slots=True)
class HTTPRule:
    """One allowed HTTP request shape; empty fields match anything (regexes as in Cilium)."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("method", "path", "host"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.headers:
            out["headers"] = list(self.headers)
        return out


@dataclass(frozen=True, slots=True)
class KafkaRule:
    """One allowed Kafka request shape; empty fields match anything."""

    role: str = ""
    api_key: str = ""
    api_version: str = ""
    client_id: str = ""
    topic: str = ""

    _JSON = (
        ("role", "role"),
        ("api_key", "apiKey"),
        ("api_version", "apiVersion"),
        ("client_id", "clientID"),
        ("topic", "topic"),
    )

    def to_dict(self) -> dict[str, str]:
        return {key: getattr(self, attr) for attr, key in self._JSON if getattr(self, attr)}


@dataclass(frozen=True, slots=True)
class L7Rules:
    """The L7 rules of one port entry. At most one parser is used per entry."""

    http: tuple[HTTPRule, ...] = ()
    kafka: tuple[KafkaRule, ...] = ()

    def is_empty(self) -> bool:
        return not self.http and not self.kafka

    def parsers(self) -> tuple[str, ...]:
        """The parsers these rules need (normally zero or one)."""
        return tuple(name for name, rules in ((HTTP, self.http), (KAFKA, self.kafka)) if rules)

    def merge(self, other: L7Rules) -> L7Rules:
        """Union of two rule sets for the same port (allows add up), order kept."""
        return L7Rules(
            http=tuple(dict.fromkeys((*self.http, *other.http))),
            kafka=tuple(dict.fromkeys((*self.kafka, *other.kafka))),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.http:
            out[HTTP] = [rule.to_dict() for rule in self.http]
        if self.kafka:
            out[KAFKA] = [rule.to_dict() for rule in self.kafka]
        return out
