"""The minimal HTTP client: request bytes, response parsing, and the failure modes."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from cilium_py.cni.agent_client import AgentClient, build_request, parse_response
from cilium_py.cni.errors import INTERNAL, TRY_AGAIN_LATER, AgentUnreachable, CNIError
from tests.unit.cni.fake_agent import FakeAgent


def test_request_bytes() -> None:
    raw = build_request("PUT", "/v1/endpoint/c1-eth0", {"netns": "/x"})
    head, body = raw.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PUT /v1/endpoint/c1-eth0 HTTP/1.1"
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b'{"netns": "/x"}'
    assert b"Content-Length" not in build_request("GET", "/v1/endpoint")
    assert b"Content-Length" not in build_request("DELETE", "/v1/endpoint/x")


def test_parse_content_length_chunked_and_close_delimited() -> None:
    r = parse_response(b'HTTP/1.1 201 CREATED\r\nContent-Length: 9\r\n\r\n{"a": 1}\nEXTRA')
    assert (r.status, r.body) == (201, {"a": 1})
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n4;ext=1\r\n: 2}\r\n0\r\n\r\n")
    assert parse_response(chunked).body == {"a": 2}
    assert parse_response(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]").body == [1, 2]
    assert parse_response(b"HTTP/1.1 204 NO CONTENT\r\n\r\n").body is None


def test_non_json_body_is_kept_as_error_text() -> None:
    r = parse_response(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!")
    assert r.status == 502 and r.body == {"error": "oops!"}


@pytest.mark.parametrize("raw", [b"garbage", b"HTTP/1.1 abc\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}"])
def test_malformed_responses_raise(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(raw)


def test_round_trip_against_the_fake(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.socket_path)
    r = client.put_endpoint("c1-eth0", {"netns": "/proc/self/ns/net", "interface-name": "eth0"})
    assert r.status == 201 and r.body["id"] == "c1-eth0"
    assert client.put_endpoint("c1-eth0", {"netns": "/proc/self/ns/net"}).status == 200
    assert [ep["id"] for ep in client.list_endpoints().body] == ["c1-eth0"]
    assert client.delete_endpoint("c1-eth0").status == 204
    assert client.delete_endpoint("c1-eth0").status == 404


def test_missing_socket_is_unreachable(short_tmp: str) -> None:
    with pytest.raises(AgentUnreachable) as exc:
        AgentClient(os.path.join(short_tmp, "none.sock")).health()
    assert exc.value.code == TRY_AGAIN_LATER


def test_hanging_agent_times_out(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "hang.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    try:
        with pytest.raises(AgentUnreachable) as exc:
            AgentClient(path, timeout=0.3).health()
        assert "no answer" in exc.value.details
    finally:
        srv.close()


def test_agent_closing_without_answer(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "close.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def accept_and_close() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.close()

    t = threading.Thread(target=accept_and_close)
    t.start()
    try:
        with pytest.raises(AgentUnreachable):
            AgentClient(path).health()
    finally:
        t.join()
        srv.close()


def test_garbage_answer_is_internal_error(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "junk.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def answer_junk() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        conn.close()

    t = threading.Thread(target=answer_junk)
    t.start()
    try:
        with pytest.raises(CNIError) as exc:
            AgentClient(path).health()
        assert exc.value.code == INTERNAL
    finally:
        t.join()
        srv.close()


def test_full_backlog_is_waited_out_not_reported_unreachable(short_tmp: str) -> None:
    """A unix socket with a full backlog answers EAGAIN at once; the client retries."""
    path = os.path.join(short_tmp, "busy.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(0)
    fillers = []
    while True:  # fill the backlog until the kernel refuses with EAGAIN
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            break
        fillers.append(s)

    def serve_later() -> None:
        import time

        time.sleep(0.3)
        for filler in fillers:
            filler.close()
        srv.settimeout(5)
        while True:
            conn, _ = srv.accept()
            with conn:
                if conn.recv(65536):  # the fillers are closed: they read as EOF
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    return

    t = threading.Thread(target=serve_later)
    t.start()
    try:
        assert AgentClient(path, timeout=5).health().status == 200
    finally:
        t.join()
        srv.close()
