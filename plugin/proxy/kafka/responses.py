"""Responses the proxy writes itself, in the request's own API version.

A denied request gets what a broker sends a client that lacks the ACL: every topic
of the request comes back with TOPIC_AUTHORIZATION_FAILED (29) on it and on each of
its partitions; a request that names no topic gets the API's own authorization error
(group, transactional id or cluster). The answer is built from kafka-python's schema
of the response, mirroring the request's topics and partitions into it, so it works
for every version of every API the parser reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .parser import API_VERSIONS, METADATA, Request
from .schema import apis

NONE = 0
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
UNSUPPORTED_VERSION = 35
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53

DENIED_MESSAGE = "Denied by the network policy (cilium-py Kafka proxy)"

_GROUP_APIS = frozenset({8, 9, 11, 12, 13, 14, 15, 42, 47, 68, 69})
_TXN_APIS = frozenset({24, 25, 26, 28, 65, 66})
_FIND_COORDINATOR, _INIT_PRODUCER_ID = 10, 22
_PARTITION_FIELDS = ("partition_index", "index", "partition", "partition_id")
_NOT_COPIED = frozenset({"error_code", "error_message", "throttle_time_ms"})


def generic_error(req: Request) -> int:
    """The authorization error of a request that names no topic."""
    key = req.api_key
    if key in _GROUP_APIS:
        return GROUP_AUTHORIZATION_FAILED
    if key in _TXN_APIS:
        return TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    if key == _FIND_COORDINATOR:
        txn = getattr(req.body, "key_type", 0) == 1
        return TRANSACTIONAL_ID_AUTHORIZATION_FAILED if txn else GROUP_AUTHORIZATION_FAILED
    if key == _INIT_PRODUCER_ID and getattr(req.body, "transactional_id", None):
        return TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    return CLUSTER_AUTHORIZATION_FAILED


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The brokers a Metadata answer lists, remembered from the last one that passed.

    A denied Metadata request is answered with them (a broker lists its brokers to
    any client): clients ignore a Metadata answer without brokers and ask again and
    again, where with them they see the per-topic authorization error.
    """

    brokers: tuple[tuple[int, str, int, str | None], ...]
    cluster_id: str | None
    controller_id: int

    @classmethod
    def from_response(cls, req: Request, frame: bytes) -> ClusterInfo | None:
        resp = req.spec.response.decode(frame[4:], version=req.api_version, header=True)
        if not resp.brokers:
            return None
        brokers = tuple((b.node_id, b.host, b.port, b.rack) for b in resp.brokers)
        return cls(brokers, resp.cluster_id, resp.controller_id)


def deny_response(req: Request, cluster: ClusterInfo | None = None) -> bytes:
    """The framed answer to a denied request (callers skip acks=0 Produce)."""
    spec = req.spec
    if req.api_key == API_VERSIONS:
        # An ApiVersions error answer is always version 0 (Kafka's rule, which
        # clients decode by).
        resp = spec.response(version=0, error_code=CLUSTER_AUTHORIZATION_FAILED, api_keys=[])
        return _encode(resp, req.correlation_id)
    version = req.api_version
    if req.topics:
        built = _Builder(TOPIC_AUTHORIZATION_FAILED, NONE)
        resp = built.struct(spec.response._struct, version, _Source(req.body, spec.request._struct))
        if built.topics_written:
            if req.api_key == METADATA and cluster is not None:
                _fill_cluster(resp, version, cluster)
            return _encode(resp, req.correlation_id)
    code = generic_error(req)
    resp = _Builder(code, code).struct(
        spec.response._struct, version, _Source(req.body, spec.request._struct)
    )
    return _encode(resp, req.correlation_id)


def _fill_cluster(resp: Any, version: int, cluster: ClusterInfo) -> None:
    broker = type(resp).MetadataResponseBroker
    resp.brokers = [
        broker(version=version, node_id=n, host=h, port=p, rack=r) for n, h, p, r in cluster.brokers
    ]
    resp.cluster_id = cluster.cluster_id
    resp.controller_id = cluster.controller_id


def unsupported_version_response(req: Request) -> bytes:
    """Kafka's answer to an ApiVersions request newer than it knows: version 0,
    UNSUPPORTED_VERSION, and the ApiVersions versions it does know."""
    spec = req.spec
    entry = spec.response.ApiVersion(
        version=0, api_key=spec.key, min_version=0, max_version=spec.named_max_version
    )
    resp = spec.response(version=0, error_code=UNSUPPORTED_VERSION, api_keys=[entry])
    return _encode(resp, req.correlation_id)


def narrow_api_versions(req: Request, frame: bytes) -> bytes:
    """The broker's ApiVersions answer, keeping only the APIs and versions the proxy
    reads and that name every topic (see :mod:`.schema`). Error answers pass as
    they are."""
    spec = req.spec
    resp = spec.response.decode(frame[4:], version=req.api_version, header=True)
    if resp.error_code != NONE:
        return frame
    known = apis()
    kept = []
    for entry in resp.api_keys or ():
        api = known.get(entry.api_key)
        if api is None:
            continue
        top = min(entry.max_version, api.named_max_version)
        if top < entry.min_version:
            continue
        entry.max_version = top
        kept.append(entry)
    resp.api_keys = kept
    return _encode(resp, req.correlation_id)


def _encode(resp: Any, correlation_id: int) -> bytes:
    resp.with_header(correlation_id=correlation_id)
    return bytes(resp.encode(header=True, framed=True))


@dataclass(slots=True)
class _Source:
    """What a response struct mirrors: a request struct value and its schema, or a
    bare topic name or partition number taken from a request array."""

    obj: Any = None
    struct: Any = None
    topic: str | None = None
    partition: int | None = None


def _fields(struct: Any, version: int) -> list[Any]:
    return [
        f
        for f in struct.fields.values()
        if f.for_version_q(version) and not f.tagged_field_q(version)
    ]


def _has_topic(struct: Any, version: int) -> bool:
    for f in struct.fields.values():
        if not f.for_version_q(version):
            continue
        if f._entity_type == "topicName" or f.name == "topic_id":
            return True
        if (f.is_struct_array() or f.is_struct()) and _has_topic(f, version):
            return True
    return False


def _is_topic_element(struct: Any, version: int) -> bool:
    return any(
        (f._entity_type == "topicName" and not f.is_array()) or f.name == "topic_id"
        for f in _fields(struct, version)
    )


def _topic_elements(obj: Any, req_fields: dict[str, Any], version: int) -> Iterator[_Source]:
    """The request's topic entries for a response's topic array: those of the first
    topic array (or topic-name list) here, else those found further down (a response
    may list flat what the request groups, as AlterReplicaLogDirs does by directory)."""
    for other in req_fields.values():
        if other.is_struct_array() and _is_topic_element(other, version):
            yield from (_Source(o, other) for o in getattr(obj, other.name) or ())
            return
        if other.is_array() and not other.is_struct_array() and other._entity_type == "topicName":
            yield from (_Source(topic=t) for t in getattr(obj, other.name) or ())
            return
    for other in req_fields.values():
        if other.is_struct_array() and _has_topic(other, version):
            for item in getattr(obj, other.name) or ():
                inner = {f.name: f for f in _fields(other, version)}
                yield from _topic_elements(item, inner, version)


def _partition_field(struct: Any, version: int) -> Any:
    names = {f.name: f for f in _fields(struct, version) if f.type_str == "int32"}
    return next((names[n] for n in _PARTITION_FIELDS if n in names), None)


def _is_partition_list(f: Any) -> bool:
    return f.is_array() and not f.is_struct_array() and "partition" in f.name


class _Builder:
    """Builds one response value by walking its schema beside the request's."""

    def __init__(self, topic_code: int, other_code: int) -> None:
        self.topic_code = topic_code
        self.other_code = other_code
        self.topics_written = 0

    def struct(self, struct: Any, version: int, src: _Source, in_topic: bool = False) -> Any:
        values: dict[str, Any] = {}
        code = self.topic_code if in_topic else self.other_code
        req_fields = {}
        if src.struct is not None and src.obj is not None:
            req_fields = {f.name: f for f in _fields(src.struct, version)}
        partition = _partition_field(struct, version)
        for f in _fields(struct, version):
            name = f.name
            if name == "error_code" and f.type_str == "int16":
                values[name] = code
            elif name == "error_message" and f.type_str == "string":
                values[name] = DENIED_MESSAGE if code else None
            elif f.is_struct_array():
                values[name] = self._array(f, version, src, req_fields, in_topic)
            elif f.is_struct():
                values[name] = (
                    None
                    if f.nullable_for_version_q(version)
                    else self.struct(f, version, _Source(), in_topic)
                )
            elif src.topic is not None and f._entity_type == "topicName" and not f.is_array():
                values[name] = src.topic
            elif src.partition is not None and f is partition:
                values[name] = src.partition
            elif name in req_fields and name not in _NOT_COPIED:
                other = req_fields[name]
                if other.type_str == f.type_str and other.is_array() == f.is_array():
                    values[name] = getattr(src.obj, name)
            elif f is partition and src.obj is not None and src.struct is not None:
                theirs = _partition_field(src.struct, version)
                if theirs is not None:
                    values[name] = getattr(src.obj, theirs.name)
        return struct.data_class(version=version, **values)

    def _array(
        self, f: Any, version: int, src: _Source, req_fields: dict[str, Any], in_topic: bool
    ) -> list[Any]:
        sources = self._pair(f, version, src, req_fields)
        is_topic = _is_topic_element(f, version)
        out = []
        for item in sources:
            out.append(self.struct(f, version, item, in_topic or is_topic))
            if is_topic:
                self.topics_written += 1
        return out

    def _pair(
        self, f: Any, version: int, src: _Source, req_fields: dict[str, Any]
    ) -> list[_Source]:
        """The request array a response array mirrors, as one source per element."""
        if not req_fields:
            return []
        same = req_fields.get(f.name)
        if same is not None and same.is_struct_array():
            return [_Source(o, same) for o in getattr(src.obj, f.name) or ()]
        if _has_topic(f, version):
            if not _is_topic_element(f, version):
                for other in req_fields.values():
                    if other.is_struct_array() and _has_topic(other, version):
                        return [_Source(o, other) for o in getattr(src.obj, other.name) or ()]
                return []
            return list(_topic_elements(src.obj, req_fields, version))
        if _partition_field(f, version) is not None:
            for other in req_fields.values():
                if other.is_struct_array() and _partition_field(other, version) is not None:
                    return [_Source(o, other) for o in getattr(src.obj, other.name) or ()]
                if _is_partition_list(other):
                    return [_Source(partition=p) for p in getattr(src.obj, other.name) or ()]
        return []
