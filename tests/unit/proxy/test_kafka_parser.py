"""The sans-IO Kafka parser: properties over arbitrary bytes and every encodable request."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.producer import ProduceRequest

from cilium_py.policy.kafka import API_NAMES
from cilium_py.proxy.kafka.parser import (
    KafkaProtocolError,
    RequestParser,
    ResponseFramer,
    parse_request,
)
from cilium_py.proxy.kafka.schema import apis
from tests.support.kafka_strategies import client_ids, frame, requests

settings.register_profile(
    "kafka",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("kafka")

Produce = ProduceRequest
Topic = Produce.TopicProduceData
Part = Topic.PartitionProduceData


def _produce(version: int = 7, acks: int = 1, topics: tuple[str, ...] = ("t",)) -> Produce:
    return Produce(
        version=version,
        acks=acks,
        timeout_ms=1000,
        topic_data=[Topic(name=t, partition_data=[Part(index=0, records=b"r")]) for t in topics],
    )


def _all(parser: RequestParser) -> list:
    out = []
    while (req := parser.next_request()) is not None:
        out.append(req)
    return out


# -- the library agrees with the policy's API table -----------------------------------


def test_api_names_are_kafkas() -> None:
    assert {k.value: k.name for k in ApiKey} == API_NAMES
    for key, spec in apis().items():
        assert spec.name == API_NAMES[key]


# -- properties -----------------------------------------------------------------------


@PROFILE
@given(st.binary(max_size=300))
@example(b"\x00\x00\x00\x0c\x00\x00\x00\x07\x00\x00\x00\x01\xff\xff")  # Produce v7, no body
@example(b"\x00\x00\x00\x0a\x00\x12\x00\x63\x00\x00\x00\x01\x00\x05")  # client id past end
def test_arbitrary_bytes_raise_only_the_parsers_error(data: bytes) -> None:
    parser = RequestParser(max_frame=1 << 16)
    parser.feed(data)
    try:
        _all(parser)
    except KafkaProtocolError as exc:
        assert exc.reason in {"malformed", "oversize", "unknown-api-key", "unsupported-version"}


@st.composite
def _framed_garbage(draw: st.DrawFn) -> bytes:
    """A well-framed header of a known API and version, then random body bytes: this is
    what reaches the generated decoders."""
    spec = draw(st.sampled_from(list(apis().values())))
    version = draw(st.integers(0, spec.max_version))
    body = draw(st.binary(max_size=200))
    head = struct.pack(">hhih", spec.key, version, 1, -1)
    if spec.flexible(version):
        head += b"\x00"
    payload = head + body
    return struct.pack(">i", len(payload)) + payload


@PROFILE
@given(_framed_garbage())
def test_garbage_bodies_raise_only_the_parsers_error(data: bytes) -> None:
    try:
        parse_request(data)
    except KafkaProtocolError as exc:
        assert exc.reason == "malformed"
        assert exc.api_key is not None and exc.correlation_id == 1


@PROFILE
@given(requests(), st.integers(-(2**31), 2**31 - 1), client_ids, st.data())
def test_every_encodable_request_round_trips(drawn, corr, client, data) -> None:
    spec, version, body = drawn
    raw = frame(body, corr, client)
    req = parse_request(raw)
    assert (req.api_key, req.api_version, req.correlation_id) == (spec.key, version, corr)
    assert req.client_id == client
    assert req.frame == raw
    assert req.body == body
    assert bytes(req.body.encode(version=version)) == bytes(body.encode(version=version))
    # Cutting the stream anywhere changes nothing.
    cut = data.draw(st.integers(0, len(raw)))
    parser = RequestParser()
    parser.feed(raw[:cut])
    first = _all(parser)
    parser.feed(raw[cut:] + raw)
    both = first + _all(parser)
    assert [r.frame for r in both] == [raw, raw]


@PROFILE
@given(requests(), st.data())
def test_truncated_or_padded_frames_are_malformed(drawn, data) -> None:
    _spec, version, body = drawn
    raw = frame(body, 7, "c")
    payload = raw[4:]
    if data.draw(st.booleans()) and len(payload) > 10:
        payload = payload[: data.draw(st.integers(10, len(payload) - 1))]
    else:
        payload += data.draw(st.binary(min_size=1, max_size=8))
    try:
        req = parse_request(struct.pack(">i", len(payload)) + payload)
    except KafkaProtocolError as exc:
        assert exc.reason == "malformed"
        return
    # A shorter body can still be a valid request of the same version (an array
    # that ended earlier); then it must say so exactly.
    assert bytes(req.body.encode(version=version)) == payload[len(payload) - _body_len(req) :]


def _body_len(req) -> int:
    return len(bytes(req.body.encode(version=req.api_version)))


# -- specific cases -------------------------------------------------------------------


def test_topics_and_client_id() -> None:
    req = parse_request(frame(_produce(topics=("a", "b", "a")), 5, "hq"))
    assert req.name == "Produce" and req.topics == ("a", "b", "a")
    assert req.info().client_id == "hq" and req.expects_response


def test_acks_zero_produce_expects_no_answer() -> None:
    assert not parse_request(frame(_produce(acks=0), 1, None)).expects_response


def test_fetch_names_forgotten_topics_too() -> None:
    F = FetchRequest
    body = F(
        version=11,
        max_wait_ms=1,
        min_bytes=1,
        topics=[F.FetchTopic(topic="a", partitions=[])],
        forgotten_topics_data=[F.ForgottenTopic(topic="b", partitions=[1])],
    )
    assert parse_request(frame(body, 1, "c")).topics == ("a", "b")


def test_topic_id_versions_name_no_topic() -> None:
    import uuid

    body = Produce(
        version=13,
        acks=1,
        timeout_ms=1,
        topic_data=[Topic(topic_id=uuid.uuid4(), partition_data=[])],
    )
    assert parse_request(frame(body, 1, "c")).topics == (None,)
    meta = MetadataRequest(
        version=12, topics=[MetadataRequest.MetadataRequestTopic(topic_id=uuid.uuid4(), name=None)]
    )
    assert parse_request(frame(meta, 1, "c")).topics == (None,)


def test_metadata_for_all_topics_names_none() -> None:
    assert parse_request(frame(MetadataRequest(version=1, topics=None), 1, "c")).topics == ()


def test_unknown_api_key_closes() -> None:
    raw = struct.pack(">ihhih", 10, 4, 0, 9, -1)  # LeaderAndIsr: not for clients
    with pytest.raises(KafkaProtocolError) as info:
        parse_request(raw)
    assert info.value.reason == "unknown-api-key" and info.value.correlation_id == 9


def test_unsupported_version_closes_except_api_versions() -> None:
    with pytest.raises(KafkaProtocolError) as info:
        parse_request(struct.pack(">ihhih", 10, 0, 99, 3, -1))
    assert info.value.reason == "unsupported-version"
    newer = parse_request(struct.pack(">ihhih", 12, 18, 99, 4, 2) + b"me")
    assert not newer.supported and newer.client_id == "me" and newer.expects_response


def test_oversize_and_undersize_frames() -> None:
    parser = RequestParser(max_frame=1000)
    parser.feed(struct.pack(">i", 1001))
    with pytest.raises(KafkaProtocolError) as info:
        parser.next_request()
    assert info.value.reason == "oversize"
    # Failed once, failed for good: the stream lost its framing.
    parser.feed(frame(ApiVersionsRequest(version=0), 1, "c"))
    with pytest.raises(KafkaProtocolError):
        parser.next_request()
    parser = RequestParser()
    parser.feed(struct.pack(">i", 3) + b"abc")
    with pytest.raises(KafkaProtocolError, match="too small"):
        parser.next_request()


def test_requests_before_a_bad_frame_come_out_first() -> None:
    good = frame(ApiVersionsRequest(version=3, client_software_name="x"), 1, "c")
    parser = RequestParser()
    parser.feed(good + good + struct.pack(">ihhih", 10, 4, 0, 9, -1))
    assert parser.next_request() is not None and parser.next_request() is not None
    with pytest.raises(KafkaProtocolError):
        parser.next_request()


def test_response_framer() -> None:
    framer = ResponseFramer()
    one = struct.pack(">ii", 8, 41) + b"abcd"
    framer.feed(one + one[:6])
    first = framer.next_response()
    assert first is not None and first.correlation_id == 41 and first.frame == one
    assert framer.next_response() is None
    framer.feed(one[6:])
    assert framer.next_response() == first
    framer.feed(struct.pack(">i", -5))
    with pytest.raises(KafkaProtocolError):
        framer.next_response()
