"""The endpoint document: the API's request and answer, and the stored record.

The field names are the API contract that the Docker and CNI adapters rely on, so the
schemas here are the single place they are spelled.
"""

from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

ENDPOINT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
STATES = ("ready", "regenerating", "disconnecting", "not-ready")


def check_endpoint_id(value: str) -> str:
    """Caller-chosen ids appear in URLs and store keys: URL-safe, at most 128 chars.
    ``.`` and ``..`` are path segments that no URL can name, so they are refused."""
    if not isinstance(value, str) or not ENDPOINT_ID.fullmatch(value):
        raise ValidationError(
            "endpoint id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -"
        )
    if value in (".", ".."):
        raise ValidationError("endpoint id must not be '.' or '..' (URL path segments)")
    return value


class StrictBoolean(fields.Boolean):
    """JSON true or false only: no "yes", 1 or "false" read as a boolean."""

    def _deserialize(self, value: object, attr: str | None, data: object, **kwargs: object) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class AddressingSchema(Schema):
    ipv4 = fields.String(allow_none=True, load_default=None)
    ipv6 = fields.String(allow_none=True, load_default=None)


class EndpointRequestSchema(Schema):
    """Body of ``PUT /v1/endpoint/{id}``."""

    netns = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=4096)
    )
    # libnetwork moves the interface itself: with "docker" the container end stays in
    # the host namespace under a temporary name, answered as "container-interface".
    docker = StrictBoolean(load_default=False)
    interface_name = fields.String(
        data_key="interface-name", load_default="eth0", validate=validate.Length(min=1)
    )
    container_id = fields.String(data_key="container-id", load_default="")
    container_name = fields.String(data_key="container-name", load_default="")
    # The runtime's network (a CNI network name): metadata, so that a runtime's GC for
    # one network leaves the attachments of another network on this agent alone.
    network = fields.String(load_default="", validate=validate.Length(max=256))
    labels = fields.List(fields.String(), load_default=list)
    addressing = fields.Nested(AddressingSchema, load_default=dict)
    enforcement = fields.String(
        load_default=None, allow_none=True,
        validate=validate.OneOf(("default", "always", "never")),
    )

    @validates("netns")
    def _netns_absolute(self, value: str | None, **_: object) -> None:
        if value is not None and not value.startswith("/"):
            raise ValidationError("netns must be an absolute path such as /var/run/netns/x")

    @validates_schema
    def _netns_or_docker(self, data: dict, **_: object) -> None:
        if not data.get("netns") and not data.get("docker"):
            raise ValidationError("netns is required", "netns")


class RouteSchema(Schema):
    family = fields.Integer()
    dst = fields.String()
    gateway = fields.String(allow_none=True)
    scope = fields.String()


class EndpointSchema(Schema):
    """The endpoint model answered by the API and kept in the store."""

    id = fields.String(required=True)
    container_id = fields.String(data_key="container-id")
    container_name = fields.String(data_key="container-name")
    network = fields.String()
    interface_name = fields.String(data_key="interface-name")
    netns = fields.String()
    host_interface = fields.String(data_key="host-interface")
    container_interface = fields.String(data_key="container-interface", allow_none=True)
    ifindex = fields.Integer()
    mac = fields.String()
    host_mac = fields.String(data_key="host-mac")
    addressing = fields.Nested(AddressingSchema)
    gateway = fields.Nested(AddressingSchema)
    routes = fields.List(fields.Nested(RouteSchema))
    labels = fields.List(fields.String())
    identity = fields.Integer()
    enforcement = fields.String(allow_none=True)
    state = fields.String(validate=validate.OneOf(STATES))
    state_reason = fields.String(data_key="state-reason")
    policy_revision = fields.Integer(data_key="policy-revision")


class LabelsPatchSchema(Schema):
    """Body of ``PATCH /v1/endpoint/{id}/labels``: the new full label list, or a delta."""

    labels = fields.List(fields.String(), load_default=None)
    add = fields.List(fields.String(), load_default=list)
    delete = fields.List(fields.String(), load_default=list)
