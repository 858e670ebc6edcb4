"""Routes for endpoints and IPAM: what the Docker and CNI adapters call."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from marshmallow import Schema, ValidationError, fields, validate

from ..endpoint.manager import RESERVATION_PREFIX
from ..endpoint.model import EndpointRequestSchema, LabelsPatchSchema, check_endpoint_id
from .body import load

bp = Blueprint("endpoints", __name__)


def _manager() -> Any:
    return current_app.config["AGENT"].endpoints


def _valid_id(ep_id: str) -> str:
    try:
        return check_endpoint_id(ep_id)
    except ValidationError as exc:
        raise ValidationError({"id": exc.messages}) from exc


@bp.put("/v1/endpoint/<ep_id>")
def put_endpoint(ep_id: str) -> Any:
    _valid_id(ep_id)
    req = load(EndpointRequestSchema())
    ep, created = _manager().create(ep_id, req)
    resp = jsonify(ep.to_api())
    resp.status_code = 201 if created else 200
    return resp


@bp.get("/v1/endpoint")
def list_endpoints() -> Any:
    return jsonify([ep.to_api() for ep in _manager().list()])


@bp.get("/v1/endpoint/<ep_id>")
def get_endpoint(ep_id: str) -> Any:
    return jsonify(_manager().get(ep_id).to_api())


@bp.delete("/v1/endpoint/<ep_id>")
def delete_endpoint(ep_id: str) -> Any:
    _manager().delete(ep_id)
    return "", 204


@bp.get("/v1/endpoint/<ep_id>/interface")
def get_interface(ep_id: str) -> Any:
    return jsonify(_manager().interface(ep_id))


@bp.patch("/v1/endpoint/<ep_id>/labels")
def patch_labels(ep_id: str) -> Any:
    req = load(LabelsPatchSchema())
    manager = _manager()
    current = manager.get(ep_id)
    if req["labels"] is not None:
        labels = list(req["labels"])
    else:
        labels = [lbl for lbl in current.labels if lbl not in set(req["delete"])]
    labels += [lbl for lbl in req["add"] if lbl not in labels]
    return jsonify(manager.set_labels(ep_id, labels).to_api())


@bp.get("/v1/ipam")
def ipam_status() -> Any:
    agent = current_app.config["AGENT"]
    return jsonify({"pools": agent.ipam.status(), "allocations": agent.ipam.allocations()})


class ReservationSchema(Schema):
    family = fields.Integer(required=True, strict=True, validate=validate.OneOf((4, 6)))
    owner = fields.String(required=True, validate=validate.Length(min=1, max=200))
    address = fields.String(load_default=None, allow_none=True)


@bp.post("/v1/ipam/reservation")
def reserve_address() -> Any:
    """Hold an address before its endpoint exists (libnetwork's IPAM asks first)."""
    req = load(ReservationSchema())
    agent = current_app.config["AGENT"]
    owner = RESERVATION_PREFIX + req["owner"]
    address = agent.ipam.allocate(req["family"], owner, req["address"])
    resp = jsonify({
        "address": str(address),
        "pool": str(agent.ipam.pool(req["family"])),
        "gateway": str(agent.ipam.router(req["family"])),
    })
    resp.status_code = 201
    return resp


@bp.delete("/v1/ipam/reservation/<address>")
def release_reservation(address: str) -> Any:
    agent = current_app.config["AGENT"]
    owner = agent.ipam.owner_of(address)
    if owner is not None and owner.startswith(RESERVATION_PREFIX):
        agent.ipam.release(address)
    return "", 204
