"""What the proxy answers itself: denials in the request's version, ApiVersions narrowing."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from kafka.protocol.consumer import FetchRequest, JoinGroupRequest, OffsetFetchRequest
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    FindCoordinatorRequest,
    MetadataRequest,
)
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest

from cilium_py.proxy.kafka.parser import parse_request
from cilium_py.proxy.kafka.responses import (
    CLUSTER_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    UNSUPPORTED_VERSION,
    ClusterInfo,
    deny_response,
    narrow_api_versions,
    unsupported_version_response,
)
from tests.support.kafka_strategies import frame, requests

PROFILE = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _decode(req: Any, raw: bytes) -> Any:
    return req.spec.response.decode(raw, version=req.api_version, header=True, framed=True)


def _error_codes(value: Any, in_topic: bool = False) -> list[tuple[bool, int]]:
    """Every (inside a topic entry?, error code) of a decoded response."""
    out: list[tuple[bool, int]] = []
    struct = value._struct
    fields = [f for f in struct.fields.values() if f.for_version_q(value.version)]
    here = in_topic or any(f._entity_type == "topicName" or f.name == "topic_id" for f in fields)
    for f in fields:
        v = getattr(value, f.name)
        if f.name == "error_code":
            out.append((here, v))
        elif f.is_struct_array():
            for item in v or ():
                out += _error_codes(item, here)
        elif f.is_struct() and v is not None:
            out += _error_codes(v, here)
    return out


def _response_topics(value: Any) -> list[str | None]:
    from cilium_py.proxy.kafka.schema import _topic_reader

    reader = _topic_reader(value._struct, value.version)
    return [] if reader is None else list(reader(value))


@PROFILE
@given(requests())
def test_every_request_can_be_denied_in_its_own_version(drawn) -> None:
    _spec, _version, body = drawn
    req = parse_request(frame(body, 77, "c"))
    raw = deny_response(req)
    if req.api_key == 18:  # ApiVersions errors are always version 0
        resp = ApiVersionsResponse.decode(raw, version=0, header=True, framed=True)
        assert resp.error_code == CLUSTER_AUTHORIZATION_FAILED
        return
    resp = _decode(req, raw)
    assert resp.header.correlation_id == 77
    codes = _error_codes(resp)
    named = [t for t in req.topics if t is not None]
    answered = _response_topics(resp)
    if answered:
        # Each topic of the answer is one of the request's, and carries 29.
        assert {t for t in answered if t} <= set(named)
        assert all(code == TOPIC_AUTHORIZATION_FAILED for inside, code in codes if inside)
        assert all(code == 0 for inside, code in codes if not inside)
    elif codes:
        # No topic in the answer: the API's own authorization error everywhere.
        assert {code for _, code in codes} <= {
            CLUSTER_AUTHORIZATION_FAILED,
            GROUP_AUTHORIZATION_FAILED,
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        }


P = ProduceRequest
T, Part = P.TopicProduceData, P.TopicProduceData.PartitionProduceData


def test_denied_produce_names_each_topic_and_partition() -> None:
    body = P(
        version=9,
        acks=-1,
        timeout_ms=1,
        topic_data=[
            T(name="a", partition_data=[Part(index=0, records=b"x"), Part(index=4, records=None)]),
            T(name="b", partition_data=[Part(index=1, records=b"y")]),
        ],
    )
    req = parse_request(frame(body, 3, "c"))
    resp = _decode(req, deny_response(req))
    got = [
        (t.name, p.index, p.error_code, p.error_message)
        for t in resp.responses
        for p in t.partition_responses
    ]
    assert [g[:3] for g in got] == [("a", 0, 29), ("a", 4, 29), ("b", 1, 29)]
    assert all("policy" in g[3] for g in got)


def test_denied_fetch_answers_per_partition_not_top_level() -> None:
    F = FetchRequest
    body = F(
        version=11,
        max_wait_ms=1,
        min_bytes=1,
        topics=[F.FetchTopic(topic="a", partitions=[F.FetchTopic.FetchPartition(partition=2)])],
    )
    req = parse_request(frame(body, 3, "c"))
    resp = _decode(req, deny_response(req))
    assert resp.error_code == 0
    (topic,) = resp.responses
    assert topic.topic == "a"
    assert [(p.partition_index, p.error_code) for p in topic.partitions] == [(2, 29)]


def test_denied_offset_fetch_by_group() -> None:
    O = OffsetFetchRequest  # noqa: E741
    G = O.OffsetFetchRequestGroup
    topic = G.OffsetFetchRequestTopics(name="x", partition_indexes=[0, 5])
    body = O(version=8, groups=[G(group_id="g", topics=[topic])])
    req = parse_request(frame(body, 3, "c"))
    (group,) = _decode(req, deny_response(req)).groups
    assert group.group_id == "g" and group.error_code == 0
    (topic,) = group.topics
    assert [(p.partition_index, p.error_code) for p in topic.partitions] == [(0, 29), (5, 29)]


def test_denied_metadata_lists_known_brokers() -> None:
    M = MetadataRequest
    req = parse_request(frame(M(version=12, topics=[M.MetadataRequestTopic(name="z")]), 3, "c"))
    cluster = ClusterInfo(((0, "10.0.0.9", 9092, None),), "cid", 0)
    resp = _decode(req, deny_response(req, cluster))
    assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [(0, "10.0.0.9", 9092)]
    assert [(t.name, t.error_code) for t in resp.topics] == [("z", 29)]
    assert resp.cluster_id == "cid"


def test_generic_errors_for_requests_without_topics() -> None:
    join = JoinGroupRequest(version=5, group_id="g", protocol_type="consumer", protocols=[])
    req = parse_request(frame(join, 1, "c"))
    assert _decode(req, deny_response(req)).error_code == GROUP_AUTHORIZATION_FAILED
    find = FindCoordinatorRequest(version=2, key="tx", key_type=1)
    req = parse_request(frame(find, 1, "c"))
    assert _decode(req, deny_response(req)).error_code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    init = InitProducerIdRequest(version=4, transactional_id=None, transaction_timeout_ms=1)
    req = parse_request(frame(init, 1, "c"))
    assert _decode(req, deny_response(req)).error_code == CLUSTER_AUTHORIZATION_FAILED
    meta = parse_request(frame(MetadataRequest(version=13, topics=None), 1, "c"))
    assert _decode(meta, deny_response(meta)).error_code == CLUSTER_AUTHORIZATION_FAILED


def _api_versions_answer(version: int, entries: list[tuple[int, int, int]]) -> bytes:
    R = ApiVersionsResponse
    resp = R(
        version=version,
        error_code=0,
        api_keys=[
            R.ApiVersion(version=version, api_key=k, min_version=lo, max_version=hi)
            for k, lo, hi in entries
        ],
        throttle_time_ms=0,
    )
    resp.with_header(correlation_id=5)
    return bytes(resp.encode(header=True, framed=True))


def test_api_versions_are_narrowed_to_named_topic_versions() -> None:
    req = parse_request(frame(ApiVersionsRequest(version=3, client_software_name="x"), 5, "c"))
    broker = [(0, 0, 13), (1, 4, 18), (3, 0, 13), (4, 0, 7), (8, 2, 10), (9, 1, 10), (18, 0, 4)]
    out = narrow_api_versions(req, _api_versions_answer(3, broker))
    resp = ApiVersionsResponse.decode(out, version=3, header=True, framed=True)
    assert resp.header.correlation_id == 5
    got = [(a.api_key, a.min_version, a.max_version) for a in resp.api_keys]
    # Produce/Fetch stop at 12, OffsetCommit/OffsetFetch at 9; LeaderAndIsr (4) is
    # not for clients and not read by the parser, so it is not advertised.
    assert got == [(0, 0, 12), (1, 4, 12), (3, 0, 13), (8, 2, 9), (9, 1, 9), (18, 0, 4)]


def test_api_versions_answer_for_a_version_too_new() -> None:
    import struct

    req = parse_request(struct.pack(">ihhih", 10, 18, 99, 4, -1))
    resp = ApiVersionsResponse.decode(
        unsupported_version_response(req), version=0, header=True, framed=True
    )
    assert resp.error_code == UNSUPPORTED_VERSION
    assert [(a.api_key, a.max_version) for a in resp.api_keys] == [(18, 4)]
