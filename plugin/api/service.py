"""Routes for services (load balancing, plugin/service/) and their BPF maps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from ..errors import Unavailable
from ..service.model import Service, ServiceRequestSchema, ServiceSchema, check_service_id
from .body import load
from .schemas import dump_checked

bp = Blueprint("service", __name__)


def _services() -> Any:
    return current_app.config["AGENT"].services


def _dump(svc: Service) -> dict[str, Any]:
    return dump_checked(ServiceSchema(), ServiceSchema().load(svc.to_api()))


@bp.put("/v1/service/<svc_id>")
def put_service(svc_id: str) -> Any:
    number = check_service_id(svc_id)
    svc = Service.from_request(number, load(ServiceRequestSchema()))
    svc, created = _services().upsert(svc)
    resp = jsonify(_dump(svc))
    resp.status_code = 201 if created else 200
    return resp


@bp.get("/v1/service")
def list_services() -> Any:
    return jsonify([_dump(s) for s in _services().list()])


@bp.get("/v1/service/<svc_id>")
def get_service(svc_id: str) -> Any:
    return jsonify(_dump(_services().get(check_service_id(svc_id))))


@bp.delete("/v1/service/<svc_id>")
def delete_service(svc_id: str) -> Any:
    _services().delete(check_service_id(svc_id))
    return "", 204


@bp.get("/v1/bpf/lb")
def bpf_lb() -> Any:
    datapath = current_app.config["AGENT"].datapath
    if datapath is None:
        raise Unavailable("the BPF datapath is not running")
    return jsonify(datapath.lb_entries())
