"""Cilium's Star Wars Kafka example (``secure-empire-kafka``) as a cilium-py policy.

The broker (``app=kafka``) lets ``empire-hq`` produce to ``deathstar-plans`` and
``empire-announce``, ``empire-outpost`` consume ``empire-announce`` and
``empire-backup`` consume ``deathstar-plans``; the brokers may talk to each other.
The rules are Cilium's, only written as the JSON array the API takes.
"""

from __future__ import annotations

from typing import Any


def _kafka_port(*rules: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ports": [{"port": "9092", "protocol": "TCP"}], "rules": {"kafka": list(rules)}}]


POLICY: list[dict[str, Any]] = [
    {
        "description": "Allow only permitted Kafka requests to empire Kafka broker",
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "empire-hq"}}],
                "toPorts": _kafka_port(
                    {"role": "produce", "topic": "deathstar-plans"},
                    {"role": "produce", "topic": "empire-announce"},
                ),
            },
            {"fromEndpoints": [{"matchLabels": {"app": "kafka"}}]},
        ],
    },
    {
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "empire-outpost"}}],
                "toPorts": _kafka_port({"role": "consume", "topic": "empire-announce"}),
            }
        ],
    },
    {
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "empire-backup"}}],
                "toPorts": _kafka_port({"role": "consume", "topic": "deathstar-plans"}),
            }
        ],
    },
]

BROKER = "container:app=kafka"
HQ = "container:app=empire-hq"
OUTPOST = "container:app=empire-outpost"
BACKUP = "container:app=empire-backup"
TOPICS = ("deathstar-plans", "empire-announce")
