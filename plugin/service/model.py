"""The service document: the API's request and answer, and the stored record.

A service is a frontend (a virtual address, a port and TCP or UDP) balanced over
backends (address, port, weight). The shape follows Cilium 1.0's service API
(``frontend-address``, ``backend-addresses``) so that its users recognise it;
options carry session affinity by client address. Pure data and validation: no
store, no kernel (plugin/service/manager.py does the I/O).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..datapath.lb import MAX_BACKENDS, LbBackendSpec, LbFrontend

PROTOCOLS = ("TCP", "UDP")
AFFINITY = ("None", "ClientIP")
MAX_AFFINITY_TIMEOUT = 86400
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for sessionAffinity: ClientIP
MAX_SERVICE_ID = 65535
MAX_WEIGHT = 1000


class StrictInteger(fields.Integer):
    """JSON numbers only (no "80" strings, no true)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class IPAddressField(fields.String):
    """An IPv4 or IPv6 address, stored in its canonical text form."""

    default_error_messages = {"invalid_ip": "not an IPv4 or IPv6 address: {input!r}"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError as exc:
            raise self.make_error("invalid_ip", input=text) from exc
        if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
            raise ValidationError(f"{text} cannot be a service address "
                                  "(unspecified, multicast or loopback)")
        return str(ip)


class FrontendSchema(Schema):
    ip = IPAddressField(required=True)
    port = StrictInteger(required=True, validate=validate.Range(1, 65535))
    protocol = fields.String(load_default="TCP", validate=validate.OneOf(PROTOCOLS))


class BackendSchema(Schema):
    ip = IPAddressField(required=True)
    port = StrictInteger(required=True, validate=validate.Range(1, 65535))
    weight = StrictInteger(load_default=1, validate=validate.Range(0, MAX_WEIGHT))


class OptionsSchema(Schema):
    session_affinity = fields.String(data_key="session-affinity", load_default="None",
                                     validate=validate.OneOf(AFFINITY))
    session_affinity_timeout = StrictInteger(
        data_key="session-affinity-timeout", load_default=DEFAULT_AFFINITY_TIMEOUT,
        validate=validate.Range(1, MAX_AFFINITY_TIMEOUT))


class ServiceRequestSchema(Schema):
    """Body of ``PUT /v1/service/{id}``."""

    id = StrictInteger(load_default=None, allow_none=True,
                       validate=validate.Range(1, MAX_SERVICE_ID))
    frontend = fields.Nested(FrontendSchema, data_key="frontend-address", required=True)
    backends = fields.List(fields.Nested(BackendSchema), data_key="backend-addresses",
                           load_default=list, validate=validate.Length(max=MAX_BACKENDS))
    options = fields.Nested(OptionsSchema, load_default=lambda: OptionsSchema().load({}))

    @validates_schema
    def _families_and_duplicates(self, data: dict[str, Any], **kwargs: Any) -> None:
        version = ipaddress.ip_address(data["frontend"]["ip"]).version
        seen: set[tuple[str, int]] = set()
        errors: dict[str, Any] = {}
        for i, b in enumerate(data.get("backends", [])):
            if ipaddress.ip_address(b["ip"]).version != version:
                errors[str(i)] = {"ip": [f"IPv{6 if version == 4 else 4} backend for an "
                                         f"IPv{version} frontend"]}
            elif (b["ip"], b["port"]) in seen:
                errors[str(i)] = {"ip": [f"backend {b['ip']} port {b['port']} listed twice"]}
            seen.add((b["ip"], b["port"]))
        if errors:
            raise ValidationError({"backend-addresses": errors})


class ServiceSchema(Schema):
    """A service as answered and stored."""

    id = fields.Integer(required=True)
    frontend = fields.Nested(FrontendSchema, data_key="frontend-address", required=True)
    backends = fields.List(fields.Nested(BackendSchema), data_key="backend-addresses",
                           required=True)
    options = fields.Nested(OptionsSchema, required=True)


def check_service_id(value: str) -> int:
    """The id in the URL: a decimal number 1-65535 (it is also the map's service id)."""
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_SERVICE_ID:
        raise ValidationError({"id": [f"service id must be a number 1-{MAX_SERVICE_ID}"]})
    return int(value)


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class Service:
    id: int
    ip: str
    port: int
    protocol: str = "TCP"
    backends: tuple[Backend, ...] = ()
    affinity: str = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_request(cls, svc_id: int, req: dict[str, Any]) -> Service:
        if req.get("id") is not None and req["id"] != svc_id:
            raise ValidationError({"id": [f"body id {req['id']} differs from the URL's "
                                          f"{svc_id}"]})
        fe, opts = req["frontend"], req["options"]
        return cls(
            id=svc_id, ip=fe["ip"], port=fe["port"], protocol=fe["protocol"],
            backends=tuple(Backend(b["ip"], b["port"], b["weight"]) for b in req["backends"]),
            affinity=opts["session_affinity"],
            affinity_timeout=opts["session_affinity_timeout"],
        )

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.ip).version

    @property
    def frontend_key(self) -> tuple[str, int, str]:
        return (self.ip, self.port, self.protocol)

    def lb_frontend(self) -> LbFrontend:
        return LbFrontend(self.ip, self.port, self.protocol)

    def lb_backends(self) -> list[LbBackendSpec]:
        return [LbBackendSpec(b.ip, b.port, b.weight) for b in self.backends]

    @property
    def lb_affinity_timeout(self) -> int:
        return self.affinity_timeout if self.affinity == "ClientIP" else 0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "frontend-address": {"ip": self.ip, "port": self.port, "protocol": self.protocol},
            "backend-addresses": [{"ip": b.ip, "port": b.port, "weight": b.weight}
                                  for b in self.backends],
            "options": {"session-affinity": self.affinity,
                        "session-affinity-timeout": self.affinity_timeout},
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_api(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Service:
        doc = json.loads(raw)
        req = ServiceRequestSchema().load(doc)
        return cls.from_request(doc["id"], req)
