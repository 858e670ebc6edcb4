"""The one mapping from an agent's error answer to a type, and what each type carries."""

from __future__ import annotations

import json

import pytest

from cilium_py import errors as agent_errors
from cilium_py.client import errors
from cilium_py.client.errors import refusal


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("status,doc,cls,agent_cls", [
    (400, {"error": "bad"}, errors.RefusedInvalidInput, agent_errors.InvalidInput),
    (404, {"error": "gone"}, errors.RefusedNotFound, agent_errors.NotFound),
    (409, {"error": "address in use"}, errors.RefusedConflict, agent_errors.Conflict),
    (409, {"error": "the pool is exhausted"}, errors.RefusedPoolExhausted,
     agent_errors.PoolExhausted),
    (409, {"error": "x", "code": "pool-exhausted"}, errors.RefusedPoolExhausted,
     agent_errors.PoolExhausted),
    (503, {"error": "datapath down"}, errors.RefusedUnavailable, agent_errors.Unavailable),
    (502, {"error": "gateway"}, errors.RefusedUnavailable, agent_errors.Unavailable),
    (500, {"error": "internal error: KeyError"}, errors.AgentRefused, agent_errors.CiliumPyError),
])
def test_status_chooses_the_type(status: int, doc: dict, cls: type, agent_cls: type) -> None:
    exc = refusal(status, raw(doc), "/s.sock", "GET", "/v1/x")
    assert type(exc) is cls and isinstance(exc, agent_cls)
    assert isinstance(exc, errors.AgentError)
    assert (exc.status, exc.reason, exc.message) == (status, doc["error"], f"agent: {doc['error']}")
    assert (exc.socket_path, exc.method, exc.path) == ("/s.sock", "GET", "/v1/x")


def test_fields_become_strings() -> None:
    exc = refusal(400, raw({"error": "bad", "fields": {"labels.0": ["a"], "n": 1}}))
    assert exc.fields == {"labels.0": "['a']", "n": "1"}


def test_bodies_without_an_error_text() -> None:
    assert refusal(502, b"Bad Gateway\n").reason == "Bad Gateway"
    assert refusal(502, b"<html>" + b"x" * 1000).reason == "<html>" + "x" * 194
    assert refusal(418, b"").reason == "HTTP 418"
    assert refusal(500, raw({"other": 1})).reason == '{"other": 1}'
    assert refusal(500, raw({"other": 1})).body == {"other": 1}


def test_unreachable_words_say_why() -> None:
    cause = FileNotFoundError(2, "No such file or directory")
    exc = errors.AgentUnreachable("/s.sock", "GET", "/v1/x", errors.MISSING, cause)
    assert isinstance(exc, agent_errors.Unavailable)
    assert exc.message == ("cannot reach the agent at /s.sock: is cilium-py-agent running? "
                           "(FileNotFoundError: [Errno 2] No such file or directory)")
    hung = errors.AgentUnreachable("/s.sock", "GET", "/v1/x", errors.TIMEOUT, TimeoutError())
    assert hung.message == "the agent at /s.sock did not answer in time"


@pytest.mark.parametrize("exc,kind", [
    (FileNotFoundError(), errors.MISSING), (PermissionError(), errors.FORBIDDEN),
    (ConnectionRefusedError(), errors.REFUSED), (BlockingIOError(), errors.BUSY),
    (TimeoutError(), errors.TIMEOUT), (OSError(), errors.BROKEN),
])
def test_connect_failures_are_told_apart(exc: OSError, kind: str) -> None:
    assert errors.unreachable_kind(exc) == kind
