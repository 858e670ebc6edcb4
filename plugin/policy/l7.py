"""Layer 7 rules (``toPorts[].rules``): parsed and carried now, enforced by the proxies.

Until a proxy for a parser runs, the resolver enforces such ports at L4 and says so;
the rules are kept intact so that the L7 work only has to consume them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

HTTP = "http"
KAFKA = "kafka"


@dataclass(frozen=True, slots=True)
class HTTPRule:
    """One allowed HTTP request shape; empty fields match anything (regexes as in Cilium)."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()

    def allows(self, request: HTTPRequest) -> bool:
        """What the proxy decides (full-match regexes, headers exact or present)."""
        for regex, value in ((self.method, request.method), (self.path, request.path),
                             (self.host, request.host)):
            if regex and re.fullmatch(regex, value) is None:
                return False
        have = {name.lower(): value for name, value in request.headers}
        for text in self.headers:
            name, sep, value = text.partition(":")
            name = name.strip().lower()
            if name not in have or (sep and have[name] != value.strip()):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("method", "path", "host"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.headers:
            out["headers"] = list(self.headers)
        return out


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """A request to judge (``policy trace --http-method ...``)."""

    method: str = "GET"
    path: str = "/"
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse_headers(cls, texts: list[str]) -> tuple[tuple[str, str], ...]:
        out = []
        for text in texts:
            name, _, value = text.partition(":")
            out.append((name.strip(), value.strip()))
        return tuple(out)

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f" (host {self.host})" if self.host else "")


@dataclass(frozen=True, slots=True)
class KafkaRule:
    """One allowed Kafka request shape; empty fields match anything.

    ``role`` and ``api_key`` are kept in lower case (they match in any case);
    :mod:`.kafka` holds what they mean and how requests are matched.
    """

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
    """The L7 rules of one port entry. At most one parser is used per entry.

    ``kafka`` is None when the entry has no Kafka rules; an empty tuple is
    ``"kafka": []``, which still sends the port to the Kafka proxy, where it allows
    no request (the issue's "an empty rule list allows nothing at L7").
    """

    http: tuple[HTTPRule, ...] = ()
    kafka: tuple[KafkaRule, ...] | None = None

    def is_empty(self) -> bool:
        return not self.http and self.kafka is None

    def parsers(self) -> tuple[str, ...]:
        """The parsers these rules need (normally zero or one)."""
        return tuple(
            name
            for name, present in ((HTTP, bool(self.http)), (KAFKA, self.kafka is not None))
            if present
        )

    def merge(self, other: L7Rules) -> L7Rules:
        """Union of two rule sets for the same port (allows add up), order kept."""
        kafka = None
        if self.kafka is not None or other.kafka is not None:
            kafka = tuple(dict.fromkeys((*(self.kafka or ()), *(other.kafka or ()))))
        return L7Rules(http=tuple(dict.fromkeys((*self.http, *other.http))), kafka=kafka)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.http:
            out[HTTP] = [rule.to_dict() for rule in self.http]
        if self.kafka is not None:
            out[KAFKA] = [rule.to_dict() for rule in self.kafka]
        return out
