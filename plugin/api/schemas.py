"""marshmallow schemas of the agent's API documents that no subsystem module owns.

With the endpoint and policy schemas, these are the source of the OpenAPI document
(:mod:`.openapi`): answers are described here, queries too.
"""

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


class ConnectivitySchema(Schema):
    """``GET /v1/health``: the connectivity monitor's last probe of every target."""

    enabled = fields.Boolean(required=True)
    targets = fields.List(fields.Dict(), required=True)


class PoolStatusSchema(Schema):
    enabled = fields.Boolean(required=True)
    pool = fields.String(allow_none=True)
    router = fields.String(allow_none=True)
    used = fields.Integer()
    free = fields.Integer()
    total = fields.Integer()


class IpamStatusSchema(Schema):
    pools = fields.Dict(keys=fields.String(), values=fields.Nested(PoolStatusSchema),
                        required=True)
    allocations = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ReservedSchema(Schema):
    """Answer of ``POST /v1/ipam/reservation``."""

    address = fields.String(required=True)
    pool = fields.String(required=True)
    gateway = fields.String(required=True)


class RevisionSchema(Schema):
    revision = fields.Integer(required=True)


class PolicySchema(Schema):
    """``GET /v1/policy``: the rules as Cilium policy JSON, and notes about them."""

    revision = fields.Integer(required=True)
    policy = fields.List(fields.Dict(), required=True)
    notes = fields.List(fields.Raw())


class PolicyDeletedSchema(Schema):
    deleted = fields.Integer(required=True)
    revision = fields.Integer(required=True)


class PolicyWaitSchema(Schema):
    revision = fields.Integer(required=True)
    reached = fields.Boolean(required=True)


class IdentitySchema(Schema):
    id = fields.Integer(required=True)
    labels = fields.List(fields.String(), required=True)


class IdentityDetailSchema(IdentitySchema):
    users = fields.List(fields.String(), required=True)


class LabelsQuerySchema(Schema):
    """``?labels=k=v,k2=v2`` (repeatable): the rules whose labels include these."""

    labels = fields.List(fields.String())


class TraceQuerySchema(Schema):
    """Query of ``GET /v1/policy/resolve``: who talks to whom, and optionally which
    L7 request."""

    source = fields.List(fields.String(), required=True)
    destination = fields.List(fields.String(), required=True)
    dport = fields.String()
    http_method = fields.String(data_key="http-method")
    http_path = fields.String(data_key="http-path")
    http_host = fields.String(data_key="http-host")
    http_header = fields.List(fields.String(), data_key="http-header")
    kafka_api_key = fields.String(data_key="kafka-api-key")
    kafka_api_version = fields.String(data_key="kafka-api-version")
    kafka_client_id = fields.String(data_key="kafka-client-id")
    kafka_topic = fields.List(fields.String(), data_key="kafka-topic")


class WaitQuerySchema(Schema):
    timeout = fields.Float(validate=validate.Range(min=0),
                           metadata={"description": "seconds, at most 300; default 30"})


class MonitorQuerySchema(Schema):
    type = fields.List(fields.String(validate=validate.OneOf(
        ("drop", "trace", "policy-verdict", "l7", "agent"))))
    from_ = fields.String(data_key="from")
    to = fields.String()
    related_to = fields.String(data_key="related-to")
    identity = fields.Integer(validate=validate.Range(min=1, max=2**32 - 1))


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
