"""The agent client maps HTTP answers to the agent's exceptions, and errors map once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.cli.client import CLIError
from cilium_py.docker.agent_api import HTTPAgentAPI
from cilium_py.docker.protocol import error_reply
from cilium_py.errors import (
    CiliumPyError,
    Conflict,
    InvalidInput,
    NotFound,
    PoolExhausted,
    Unavailable,
)


@dataclass
class FakeResponse:
    status_code: int
    doc: Any = None
    text: str = ""

    @property
    def content(self) -> bytes:
        return b"" if self.doc is None else b"x"

    def json(self) -> Any:
        if self.doc is None:
            raise ValueError("no JSON")
        return self.doc


def _api(monkeypatch, resp: FakeResponse | Exception) -> tuple[HTTPAgentAPI, list]:
    api = HTTPAgentAPI("/nonexistent.sock")
    seen: list = []

    def request(method, path, body=None, **_):
        seen.append((method, path, body))
        if isinstance(resp, Exception):
            raise resp
        return resp

    monkeypatch.setattr(api._client, "request", request)
    return api, seen


@pytest.mark.parametrize("status,cls", [(400, InvalidInput), (404, NotFound), (409, Conflict),
                                        (503, Unavailable), (500, CiliumPyError)])
def test_status_becomes_the_agents_exception(monkeypatch, status, cls):
    api, _ = _api(monkeypatch, FakeResponse(status, {"error": "nope", "fields": {"a": "b"}}))
    with pytest.raises(cls) as info:
        api.get_endpoint("e1")
    assert info.value.message == "agent: nope"
    assert info.value.fields == {"a": "b"}


def test_unreachable_agent_is_unavailable(monkeypatch):
    api, _ = _api(monkeypatch, CLIError("cannot reach the agent at /x"))
    with pytest.raises(Unavailable):
        api.list_endpoints()


def test_delete_of_a_missing_endpoint_is_success(monkeypatch):
    api, seen = _api(monkeypatch, FakeResponse(404, {"error": "gone"}))
    api.delete_endpoint("e1")
    api.release("10.201.0.9")
    assert [s[0] for s in seen] == ["DELETE", "DELETE"]


def test_reserve_body(monkeypatch):
    api, seen = _api(monkeypatch, FakeResponse(201, {"address": "10.201.0.7"}))
    assert api.reserve(4, "docker:p:1")["address"] == "10.201.0.7"
    assert seen == [("POST", "/v1/ipam/reservation", {"family": 4, "owner": "docker:p:1"})]


def test_set_labels_patches_the_full_list(monkeypatch):
    api, seen = _api(monkeypatch, FakeResponse(200, {"id": "e1"}))
    api.set_labels("e1", ["container:app=web"])
    assert seen == [("PATCH", "/v1/endpoint/e1/labels", {"labels": ["container:app=web"]})]


def test_non_json_error_body(monkeypatch):
    api, _ = _api(monkeypatch, FakeResponse(502, None, "Bad Gateway"))
    with pytest.raises(CiliumPyError, match="Bad Gateway"):
        api.ipam_status()


@pytest.mark.parametrize("exc,status", [
    (InvalidInput("Pool is not a prefix"), 400),
    (InvalidInput("agent: bad label"), 500),  # the agent refused: not dockerd's syntax
    (NotFound("agent: endpoint x not found"), 500),
    (PoolExhausted("agent: exhausted"), 500),
    (Unavailable("agent: down"), 500),
])
def test_error_reply_statuses(exc, status):
    doc, got = error_reply(exc)
    assert got == status and doc == {"Err": exc.message}


def test_error_reply_appends_fields():
    doc, _ = error_reply(Conflict("agent: in use", {"addressing.ipv4": "10.201.0.2 taken"}))
    assert doc["Err"] == "agent: in use (addressing.ipv4: 10.201.0.2 taken)"
