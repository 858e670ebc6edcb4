"""The agent client maps HTTP answers to the agent's exceptions, and errors map once."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from typing import Any

import pytest

from cilium_py.client.transport import Response
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


def _api(monkeypatch, resp: tuple[int, Any] | Exception) -> tuple[HTTPAgentAPI, list]:
    """An API whose transport answers ``(status, document or raw text)``."""
    api = HTTPAgentAPI("/nonexistent.sock")
    seen: list = []

    def request(method, path, payload=None, timeout=None):
        seen.append((method, path, None if payload is None else json.loads(payload)))
        if isinstance(resp, Exception):
            raise resp
        status, doc = resp
        if doc is None:
            return Response(status)
        return Response(status, doc.encode() if isinstance(doc, str) else json.dumps(doc).encode())

    monkeypatch.setattr(api._transport, "request", request)
    return api, seen


@pytest.mark.parametrize("status,cls", [(400, InvalidInput), (404, NotFound), (409, Conflict),
                                        (503, Unavailable), (500, CiliumPyError)])
def test_status_becomes_the_agents_exception(monkeypatch, status, cls):
    api, _ = _api(monkeypatch, (status, {"error": "nope", "fields": {"a": "b"}}))
    with pytest.raises(cls) as info:
        api.get_endpoint("e1")
    assert info.value.message == "agent: nope"
    assert info.value.fields == {"a": "b"}


def test_unreachable_agent_is_unavailable(monkeypatch):
    api = HTTPAgentAPI("/nonexistent/agent.sock")
    with pytest.raises(Unavailable, match="/nonexistent/agent.sock"):
        api.list_endpoints()


def test_delete_of_a_missing_endpoint_is_success(monkeypatch):
    api, seen = _api(monkeypatch, (404, {"error": "gone"}))
    assert api.delete_endpoint("e1") is False
    api.release("10.201.0.9")
    assert [s[0] for s in seen] == ["DELETE", "DELETE"]


def test_reserve_body(monkeypatch):
    api, seen = _api(monkeypatch, (201, {"address": "10.201.0.7"}))
    assert api.reserve(4, "docker:p:1")["address"] == "10.201.0.7"
    assert seen == [("POST", "/v1/ipam/reservation", {"family": 4, "owner": "docker:p:1"})]


def test_set_labels_patches_the_full_list(monkeypatch):
    api, seen = _api(monkeypatch, (200, {"id": "e1"}))
    api.set_labels("e1", ["container:app=web"])
    assert seen == [("PATCH", "/v1/endpoint/e1/labels", {"labels": ["container:app=web"]})]


def test_non_json_error_body(monkeypatch):
    api, _ = _api(monkeypatch, (502, "Bad Gateway"))
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


# -- the transport, against a real unix socket server --------------------------------


class _AgentDouble(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A unix-socket HTTP/1.1 server that counts connections and requests.

    ``drop_after`` closes a connection after that many requests on it *without* an
    answer to the next one, the way a server's keep-alive timeout races a client.
    """

    daemon_threads = True

    def __init__(self, path: str, drop_after: int | None = None) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self.drop_after = drop_after
        super().__init__(path, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _AgentDouble

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.served = 0

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.server.drop_after is not None and self.served >= self.server.drop_after:
            self.server.requests.append((self.command, self.path))
            self.close_connection = True
            return  # no answer: the connection just closes
        self.served += 1
        self.server.requests.append((self.command, self.path))
        doc = json.dumps({"path": self.path, "body": json.loads(body) if body else None})
        data = doc.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def agent_double(tmp_path):
    servers: list[_AgentDouble] = []

    def start(drop_after: int | None = None) -> tuple[HTTPAgentAPI, _AgentDouble]:
        path = str(tmp_path / f"agent{len(servers)}.sock")
        server = _AgentDouble(path, drop_after)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return HTTPAgentAPI(path, timeout=5), server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_consecutive_calls_share_one_connection(agent_double):
    api, server = agent_double()
    assert api.get_endpoint("e1")["path"] == "/v1/endpoint/e1"
    assert api.put_endpoint("e2", {"netns": None})["body"] == {"netns": None}
    api.ipam_status()
    assert server.connections == 1
    assert len(server.requests) == 3


def test_connection_the_agent_dropped_is_replaced(agent_double):
    """gunicorn closes idle kept-alive connections; the next call must still work."""
    api, server = agent_double(drop_after=1)
    api.get_endpoint("e1")
    assert api.get_endpoint("e2")["path"] == "/v1/endpoint/e2"
    assert server.connections == 2


def test_reservation_is_never_sent_twice(agent_double):
    """A POST whose connection died may have been served: it fails rather than repeats."""
    api, server = agent_double(drop_after=1)
    api.get_endpoint("e1")
    # The server reads the POST and closes without answering, as if it died mid-call.
    # (The dropped-connection check cannot see this: the socket was still open.)
    with pytest.raises(Unavailable):
        api.reserve(4, "docker:p:1")
    assert server.requests.count(("POST", "/v1/ipam/reservation")) == 1
