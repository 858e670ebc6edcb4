"""What the proxy takes from kafka-python's protocol classes, in one place.

kafka-python (pinned in setup.cfg) generates its request and response classes from
Apache Kafka's own JSON message definitions, for every version of every public API.
This module is the only one that looks inside them (their ``_struct`` field trees, the
compiled decoders); everything else goes through :class:`ApiSpec`. Its tests pin each
assumption, so a kafka-python upgrade that changes them fails there first.

Topic ids: Produce and Fetch v13+, OffsetCommit and OffsetFetch v10+ (and DeleteTopics
v6+, optionally) name topics by id instead of by name. Policy is written in topic
names, so the proxy advertises, in the ApiVersions answers it passes on, only versions
that name every topic (:attr:`ApiSpec.named_max_version`). A client that sends an
id-only version anyway gets its topics treated as unnamed: only a rule without
``topic`` allows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# Importing the modules registers every message class with ApiMessage.
import kafka.protocol.admin  # noqa: F401
import kafka.protocol.consumer  # noqa: F401
import kafka.protocol.metadata  # noqa: F401
import kafka.protocol.producer  # noqa: F401
from kafka.protocol.api_header import RequestHeader
from kafka.protocol.api_message import ApiMessage

TopicReader = Callable[[Any], Iterator[str | None]]

TOPIC_NAME = "topicName"


def _classes() -> dict[tuple[int, str], type[ApiMessage]]:
    out: dict[tuple[int, str], type[ApiMessage]] = {}
    todo = list(ApiMessage.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is None and getattr(cls, "_json", None):
            out[(cls.API_KEY, cls.type)] = cls
    return out


@dataclass(frozen=True)
class ApiSpec:
    """One Kafka API as kafka-python knows it."""

    key: int
    name: str  # Kafka's name: "Produce"
    request: type[ApiMessage]
    response: type[ApiMessage]
    max_version: int  # the highest version kafka-python can read
    named_max_version: int  # the highest version that names every topic
    _readers: dict[int, TopicReader | None] = field(default_factory=dict, compare=False)

    def flexible(self, version: int) -> bool:
        return bool(self.request.flexible_version_q(version))

    def decode_body(self, data: memoryview, pos: int, version: int) -> tuple[Any, int]:
        """Decode the request body at ``pos``; return it and the position after it."""
        flexible = self.flexible(version)
        decode = self.request._struct.compiled_decode_from(
            version, compact=flexible, tagged=flexible, data_class=self.request
        )
        body, end = decode(data, pos)
        # The generated decoder skips ApiMessage.__init__; set what it would have, so
        # the body can be re-encoded like one built by hand.
        body._header = None
        body._min_version = body._max_version = None
        return body, end

    def topics(self, body: Any, version: int) -> tuple[str | None, ...]:
        """The topics a decoded request names, in order; None for one named by id."""
        reader = self._readers.get(version, _MISSING)
        if reader is _MISSING:
            reader = self._readers[version] = _topic_reader(self.request._struct, version)
        if reader is None:
            return ()
        return tuple(reader(body))


_MISSING: Any = object()


def _fields(struct: Any, version: int) -> list[Any]:
    return [f for f in struct.fields.values() if f.for_version_q(version)]


def _is_topic_name(f: Any) -> bool:
    return f._entity_type == TOPIC_NAME


def _is_topic_id(f: Any) -> bool:
    return f.name == "topic_id" and f.type_str == "uuid"


def _topic_reader(struct: Any, version: int) -> TopicReader | None:
    """A function yielding the topics of a ``struct`` value at ``version``, built once
    from the schema: topic-name strings and string arrays, and the structs and struct
    arrays that hold them; a struct with a topic id and no (or a null) name yields None."""
    steps: list[Callable[[Any], Iterator[str | None]]] = []
    fields = _fields(struct, version)
    name = next((f.name for f in fields if _is_topic_name(f) and not f.is_array()), None)
    has_id = any(_is_topic_id(f) for f in fields)
    if name is not None or has_id:

        def own(obj: Any, name: str | None = name) -> Iterator[str | None]:
            yield getattr(obj, name) if name is not None else None

        steps.append(own)
    for f in fields:
        if f.is_struct_array() or f.is_struct():
            sub = _topic_reader(f, version)
            if sub is None:
                continue
            if f.is_struct_array():

                def many(obj: Any, attr: str = f.name, sub: TopicReader = sub) -> Iterator[Any]:
                    for item in getattr(obj, attr) or ():
                        yield from sub(item)

                steps.append(many)
            else:

                def one(obj: Any, attr: str = f.name, sub: TopicReader = sub) -> Iterator[Any]:
                    item = getattr(obj, attr)
                    if item is not None:
                        yield from sub(item)

                steps.append(one)
        elif f.is_array() and _is_topic_name(f):

            def names(obj: Any, attr: str = f.name) -> Iterator[str | None]:
                yield from getattr(obj, attr) or ()

            steps.append(names)
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def all_steps(obj: Any) -> Iterator[str | None]:
        for step in steps:
            yield from step(obj)

    return all_steps


def _names_every_topic(struct: Any, version: int) -> bool:
    """False when some struct of ``version`` carries a topic id and no topic name."""
    fields = _fields(struct, version)
    if any(_is_topic_id(f) for f in fields) and not any(
        _is_topic_name(f) and not f.is_array() for f in fields
    ):
        return False
    return all(
        _names_every_topic(f, version) for f in fields if f.is_struct_array() or f.is_struct()
    )


def _spec(request: type[ApiMessage], response: type[ApiMessage]) -> ApiSpec:
    top = int(request.max_version)
    named = top
    for version in range(top + 1):
        if not _names_every_topic(request._struct, version):
            named = version - 1
            break
    name = request.name.removesuffix("Request")
    return ApiSpec(request.API_KEY, name, request, response, top, named)


@cache
def apis() -> dict[int, ApiSpec]:
    """Every API kafka-python can read, by key."""
    classes = _classes()
    out = {}
    for (key, kind), cls in classes.items():
        if kind == "request" and (key, "response") in classes:
            out[key] = _spec(cls, classes[(key, "response")])
    return dict(sorted(out.items()))


def header_decoder(flexible: bool) -> Callable[[memoryview, int], tuple[Any, int]]:
    """The request header decoder (v1, or v2 with tagged fields for flexible bodies).

    The client id is a classic (non-compact) nullable string in both, as Kafka has it.
    """
    version = 2 if flexible else 1
    return RequestHeader._struct.compiled_decode_from(
        version, compact=False, tagged=flexible, data_class=RequestHeader
    )
