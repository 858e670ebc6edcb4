"""The OpenAPI 3 document, generated from the Flask routes and the marshmallow schemas.

There is no hand-written document to drift: every path and method comes from the app's
URL map (so a route added anywhere is documented the moment it is registered), and
every request body, query and answer is described by the same marshmallow schema that
validates or serialises it, turned into JSON Schema by ``apispec``'s marshmallow plugin.
:data:`OPERATIONS` adds what the code cannot say by itself: a summary, the statuses a
route answers and which schema each answer has. A route missing from it is still
documented, from its docstring, as "some JSON, or the error document".
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from .. import __version__
from ..endpoint.model import EndpointRequestSchema, EndpointSchema, LabelsPatchSchema
from ..policy.schema import RuleSchema
from ..service.model import ServiceRequestSchema, ServiceSchema
from . import schemas as s

JSON = "application/json"
#: Path converters -> the JSON Schema of the parameter.
_CONVERTERS = {"int": {"type": "integer", "minimum": 0}, "default": {"type": "string"}}
_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")

ANY_JSON: dict[str, Any] = {}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
ANY_ARRAY: dict[str, Any] = {"type": "array", "items": {}}


@dataclass(frozen=True)
class Op:
    """What one route answers: ``responses`` maps status -> (description, schema).

    A schema is a marshmallow Schema class or instance (``many=True`` for arrays), a
    plain JSON Schema dict, or None for an empty body. Every operation also answers
    the error document under ``default``; 5xx statuses must be listed to be allowed.
    """

    summary: str
    responses: dict[int, tuple[str, Any]]
    body: Any = None
    query: type[Schema] | None = None
    content: str = JSON
    tags: tuple[str, ...] = field(default=())


def _ok(schema: Any, description: str = "ok") -> dict[int, tuple[str, Any]]:
    return {200: (description, schema)}


_NO_DATAPATH = (503, ("the BPF datapath is not running", s.ErrorSchema))

#: Keyed by Flask endpoint name (``blueprint.function``).
OPERATIONS: dict[str, Op] = {
    "health.healthz": Op("Health of each subsystem", {
        200: ("healthy or degraded", s.HealthSchema),
        503: ("a subsystem is failing", s.HealthSchema)}),
    "health.connectivity": Op(
        "Connectivity health: reachability and latency of every probed target",
        _ok(s.ConnectivitySchema)),
    "health.config": Op("The agent's effective configuration", _ok(s.ConfigSchema)),
    "health.openapi": Op("This document, generated from the routes and schemas",
                         _ok(ANY_OBJECT, "OpenAPI 3 document")),
    "endpoints.list_endpoints": Op("All endpoints of this node",
                                   _ok(EndpointSchema(many=True))),
    "endpoints.put_endpoint": Op("Attach an endpoint (idempotent)", {
        201: ("created", EndpointSchema),
        200: ("the same request again", EndpointSchema),
        **dict([_NO_DATAPATH])}, body=EndpointRequestSchema),
    "endpoints.get_endpoint": Op("One endpoint", _ok(EndpointSchema)),
    "endpoints.delete_endpoint": Op("Detach an endpoint", {204: ("deleted", None)}),
    "endpoints.get_interface": Op(
        "The endpoint's container interface as the kernel has it now (CNI CHECK)",
        _ok(ANY_OBJECT, "netns and exists; when it exists: ifname, ifindex, mac, mtu, up, "
                        "addresses, routes, neighbours; otherwise reason")),
    "endpoints.patch_labels": Op("Change labels (and so identity)", _ok(EndpointSchema),
                                 body=LabelsPatchSchema),
    "endpoints.ipam_status": Op("Pools, use and allocations", _ok(s.IpamStatusSchema)),
    "endpoints.reserve_address": Op(
        "Hold an address before its endpoint exists (Docker IPAM)",
        {201: ("address, pool and gateway", s.ReservedSchema)},
        body="endpoints.ReservationSchema"),
    "endpoints.release_reservation": Op("Release a held address (idempotent)",
                                        {204: ("released", None)}),
    "bpf.bpf_endpoints": Op("BPF local endpoint map", {200: ("entries", ANY_JSON),
                                                       **dict([_NO_DATAPATH])}),
    "policy.put_policy": Op("Import rules (a Cilium policy JSON array)",
                            _ok(s.RevisionSchema), body=RuleSchema(many=True)),
    "policy.get_policy": Op("Rules, optionally filtered by labels", _ok(s.PolicySchema),
                            query=s.LabelsQuerySchema),
    "policy.delete_policy": Op("Delete rules by labels (all when none given)",
                               _ok(s.PolicyDeletedSchema), query=s.LabelsQuerySchema,
                               body="policy.PolicyDeleteSchema"),
    "policy.resolve": Op("Policy trace between two label sets", _ok(ANY_OBJECT, "trace"),
                         query=s.TraceQuerySchema),
    "policy.wait": Op("Return once every endpoint runs the revision", {
        200: ("reached", s.PolicyWaitSchema),
        504: ("not reached in time", s.PolicyWaitSchema)}, query=s.WaitQuerySchema),
    "policy.endpoint_policy": Op("The endpoint's resolved policy and its map entries",
                                 _ok(ANY_OBJECT, "resolved policy")),
    "policy.identities": Op("All identities", _ok(s.IdentitySchema(many=True))),
    "policy.identity": Op("One identity", _ok(s.IdentityDetailSchema)),
    "monitor.monitor": Op(
        "Live datapath events, one JSON object a line", _ok(ANY_OBJECT, "event stream"),
        query=s.MonitorQuerySchema, content="application/x-ndjson"),
    "bpf.node": Op("This node and the cluster's nodes (cluster mode)",
                   _ok(ANY_OBJECT, "node document")),
    "service.list_services": Op("All services (load balancing)",
                                _ok(ServiceSchema(many=True))),
    "service.put_service": Op("Create or replace a service", {
        201: ("created", ServiceSchema), 200: ("replaced", ServiceSchema),
        **dict([_NO_DATAPATH])}, body=ServiceRequestSchema),
    "service.get_service": Op("One service", _ok(ServiceSchema)),
    "service.delete_service": Op("Delete a service", {204: ("deleted", None),
                                                       **dict([_NO_DATAPATH])}),
    "service.bpf_lb": Op("BPF load-balancing maps: frontends and their backend slots",
                         {200: ("frontends", ANY_ARRAY), **dict([_NO_DATAPATH])}),
}


def _fallback(view: Any) -> Op:
    """A route without an :data:`OPERATIONS` entry: its docstring, any JSON."""
    doc = (getattr(view, "__doc__", None) or "").strip().splitlines()
    return Op(doc[0] if doc else getattr(view, "__name__", "undocumented"),
              {200: ("ok", ANY_JSON), 503: ("a subsystem the route needs is not running",
                                            s.ErrorSchema)})


def _schema_ref(app: Flask, schema: Any) -> Any:
    """A marshmallow schema (class, instance or "blueprint.Name": a schema declared in
    the blueprint's module) or a JSON Schema dict; apispec's plugin turns schemas into
    components and references (``many=True`` into an array of them)."""
    if isinstance(schema, str):
        blueprint, _, name = schema.partition(".")
        schema = getattr(importlib.import_module(app.blueprints[blueprint].import_name), name)
    return schema


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for m in _PARAM.finditer(rule):
        conv = m.group("conv") or "default"
        params.append({"name": m.group("name"), "in": "path", "required": True,
                       "schema": dict(_CONVERTERS.get(conv, _CONVERTERS["default"]))})
    return _PARAM.sub(lambda m: "{" + m.group("name") + "}", rule), params


def _operation(app: Flask, op: Op, path_params: list[dict[str, Any]]
               ) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "responses": {}}
    params: list[Any] = list(path_params)
    if op.query is not None:
        params.append({"in": "query", "schema": op.query})
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            JSON: {"schema": _schema_ref(app, op.body)}}}
    for status, (description, schema) in op.responses.items():
        response: dict[str, Any] = {"description": description}
        if schema is not None:
            content = JSON if status >= 400 else op.content
            response["content"] = {content: {"schema": _schema_ref(app, schema)}}
        out["responses"][str(status)] = response
    out["responses"]["default"] = {
        "description": 'an error: {"error": message, "fields": {path: message}}',
        "content": {JSON: {"schema": s.ErrorSchema}}}
    return out


def build_document(app: Flask) -> dict[str, Any]:
    """The document for ``app`` as it is now: every /v1/ route, every method."""
    spec = APISpec(
        title="cilium-py agent API", version=__version__, openapi_version="3.0.3",
        plugins=[_Plugin(schema_name_resolver=_schema_name)],
        info={"description": (
            "REST API of cilium-py-agent, served over a unix socket (default "
            "/var/run/cilium-py/cilium.sock). Generated from the agent's routes and "
            "marshmallow schemas. Every error answers "
            '{"error": message, "fields": {path: message}}.')},
    )
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/v1/"):
            continue
        path, params = _path(rule.rule)
        view = app.view_functions[rule.endpoint]
        op = OPERATIONS.get(rule.endpoint) or _fallback(view)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(app, op, params)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


class _Plugin(MarshmallowPlugin):
    """apispec's marshmallow plugin, plus our fields that parse by hand: such a field
    class says its JSON Schema in an ``openapi`` attribute (a port is "80" or 80)."""

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        assert self.converter is not None

        def field_openapi(converter: Any, field: Any, ret: dict[str, Any], **_: Any
                          ) -> dict[str, Any]:
            extra = getattr(field, "openapi", None)
            if not extra:
                return {}
            if ret.get("nullable"):
                return {**extra, "nullable": True}
            return dict(extra)

        self.converter.add_attribute_function(field_openapi)


def _schema_name(schema: Any) -> str:
    """Component names without the ``Schema`` suffix; ``many`` shares the component."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[:-len("Schema")] if name.endswith("Schema") and name != "Schema" else name
