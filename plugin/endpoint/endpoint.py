"""The Endpoint record: one container interface the agent owns."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .model import EndpointSchema


@dataclass
class Endpoint:
    id: str
    netns: str | None
    netns_id: str = ""  # "dev:inode" of the namespace, whatever path named it
    interface_name: str = "eth0"
    container_id: str = ""
    container_name: str = ""
    network: str = ""  # the runtime's network name (CNI), metadata only
    host_interface: str = ""
    container_interface: str | None = None
    docker: bool = False
    ifindex: int = 0
    mac: str = ""
    host_mac: str = ""
    addressing: dict[str, str | None] = field(default_factory=lambda: {"ipv4": None, "ipv6": None})
    gateway: dict[str, str | None] = field(default_factory=lambda: {"ipv4": None, "ipv6": None})
    routes: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    identity: int = 5
    enforcement: str | None = None
    state: str = "not-ready"
    # Why the endpoint is not ready (a failed regeneration, its namespace gone); empty
    # while it is ready or still attaching.
    state_reason: str = ""
    policy_revision: int = 0

    @property
    def ipv4(self) -> str | None:
        return self.addressing.get("ipv4")

    @property
    def ipv6(self) -> str | None:
        return self.addressing.get("ipv6")

    def to_api(self) -> dict[str, Any]:
        return EndpointSchema().dump(self)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Endpoint:
        doc = json.loads(raw)
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)
