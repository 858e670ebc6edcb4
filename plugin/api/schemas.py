"""marshmallow schemas for the agent's own API documents (health, config)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

STATUSES = ("ok", "degraded", "failure")


class SubsystemStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    message = fields.String(load_default="")
    details = fields.Dict(keys=fields.String(), load_default=dict)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    version = fields.String(required=True)
    uptime_seconds = fields.Float(required=True, data_key="uptime-seconds")
    subsystems = fields.Dict(
        keys=fields.String(), values=fields.Nested(SubsystemStatusSchema), required=True
    )


class ConfigSchema(Schema):
    """The effective configuration, with the flag names as keys."""

    state_dir = fields.String(data_key="state-dir", required=True)
    socket = fields.String(required=True)
    bpf_root = fields.String(data_key="bpf-root", required=True)
    store = fields.String(required=True)
    log_format = fields.String(data_key="log-format", required=True)
    log_level = fields.String(data_key="log-level", required=True)
    ipv4_pool = fields.String(data_key="ipv4-pool", allow_none=True)
    ipv6_pool = fields.String(data_key="ipv6-pool", allow_none=True)
    router_device = fields.String(data_key="router-device")
    masquerade = fields.Boolean()
    enforcement = fields.String()
    allow_host_ingress = fields.Boolean(data_key="allow-host-ingress")
    threads = fields.Integer()
    kubeconfig = fields.String(allow_none=True)
    docker_labels = fields.Boolean(data_key="docker-labels")
    etcd_ca_file = fields.String(data_key="etcd-ca-file", allow_none=True)
    etcd_cert_file = fields.String(data_key="etcd-cert-file", allow_none=True)
    etcd_key_file = fields.String(data_key="etcd-key-file", allow_none=True)
    node_name = fields.String(data_key="node-name", allow_none=True)
    node_address = fields.String(data_key="node-address", allow_none=True)
    tunnel = fields.String()
    node_ipv4_prefix_len = fields.Integer(data_key="node-ipv4-prefix-len")
    node_ipv6_prefix_len = fields.Integer(data_key="node-ipv6-prefix-len")
    node_lease_ttl = fields.Integer(data_key="node-lease-ttl")
    health_checking = fields.Boolean(data_key="health-checking")
    health_interval = fields.Float(data_key="health-interval")
    prometheus_serve_addr = fields.String(data_key="prometheus-serve-addr", allow_none=True)


class ErrorSchema(Schema):
    error = fields.String(required=True)
    fields = fields.Dict(keys=fields.String(), values=fields.String())


def dump_checked(schema: Schema, obj: object) -> dict:
    """Serialise a response and validate it against the same schema.

    Catching a malformed response here, rather than in a client, keeps the OpenAPI
    document and the real answers from drifting apart.
    """
    data = schema.dump(obj)
    errors = schema.validate(data)
    if errors:
        raise ValueError(f"response does not match {type(schema).__name__}: {errors}")
    return data
