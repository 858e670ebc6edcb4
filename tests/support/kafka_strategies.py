"""Hypothesis strategies for Kafka requests, derived from kafka-python's schemas.

``requests()`` draws an API the parser knows, a version of it, and a request value
with every field of that version filled with something the library can encode; the
parser's round-trip property is tested over all of them.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from cilium_py.proxy.kafka.schema import ApiSpec, apis

_INTS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_bytes = st.binary(max_size=24)


def _simple(f: Any, version: int, type_str: str) -> st.SearchStrategy[Any]:
    if type_str in _INTS:
        lo, hi = _INTS[type_str]
        return st.integers(lo, hi)
    if type_str == "bool":
        return st.booleans()
    if type_str == "float64":
        return st.floats(allow_nan=False)
    if type_str == "uuid":
        return st.uuids().map(lambda u: uuid.UUID(int=u.int))
    if type_str == "string":
        base = _text
    elif type_str in ("bytes", "records"):
        base = _bytes
    else:
        raise AssertionError(f"no strategy for {type_str}")
    if f.nullable_for_version_q(version):
        return st.none() | base
    return base


def _value(f: Any, version: int) -> st.SearchStrategy[Any]:
    if f.is_struct_array():
        items = st.lists(struct(f.array_of, version), max_size=2)
        return st.none() | items if f.nullable_for_version_q(version) else items
    if f.is_struct():
        inner = struct(f, version)
        return st.none() | inner if f.nullable_for_version_q(version) else inner
    if f.is_array():
        items = st.lists(_simple(f.array_of, version, f.array_of.type_str), max_size=3)
        return st.none() | items if f.nullable_for_version_q(version) else items
    return _simple(f, version, f.type_str)


def struct(s: Any, version: int) -> st.SearchStrategy[Any]:
    """A value of struct ``s`` at ``version``; tagged fields left out or drawn."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in s.fields.values():
        if not f.for_version_q(version):
            continue
        (optional if f.tagged_field_q(version) else required)[f.name] = _value(f, version)
    cls = s.data_class
    return st.fixed_dictionaries(required, optional=optional).map(
        lambda kw: cls(version=version, **kw)
    )


def requests(keys: list[int] | None = None) -> st.SearchStrategy[tuple[ApiSpec, int, Any]]:
    """(spec, version, request body) for any API and version the parser reads."""
    specs = [apis()[k] for k in keys] if keys else list(apis().values())

    @st.composite
    def draw(d: st.DrawFn) -> tuple[ApiSpec, int, Any]:
        spec = d(st.sampled_from(specs))
        version = d(st.integers(0, spec.max_version))
        body = d(struct(spec.request._struct, version))
        return spec, version, body

    return draw()


client_ids = st.none() | _text


def frame(body: Any, correlation_id: int, client_id: str | None) -> bytes:
    """The request as a client sends it: length, header, body."""
    body.with_header(correlation_id=correlation_id, client_id=client_id)
    return bytes(body.encode(header=True, framed=True))
