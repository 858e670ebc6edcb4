"""The unix-socket transport against real sockets: each way of not answering, and streams."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from cilium_py.client import errors
from cilium_py.client.agent import AgentClient
from tests.support.unix_answer import serve_once


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="cpyt-cl-", dir="/tmp")  # socket paths: 107 bytes at most
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def failure(client: AgentClient) -> errors.AgentError:
    with pytest.raises(errors.AgentError) as exc:
        client.get("/v1/healthz")
    return exc.value


def test_missing_and_refusing_sockets(sock_dir: str) -> None:
    missing = failure(AgentClient(os.path.join(sock_dir, "none.sock")))
    assert isinstance(missing, errors.AgentUnreachable) and missing.kind == errors.MISSING
    assert missing.connecting
    stale = os.path.join(sock_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays, nobody listens
    refused = failure(AgentClient(stale))
    assert isinstance(refused, errors.AgentUnreachable) and refused.kind == errors.REFUSED


def test_silent_agent_times_out(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "hang.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    try:
        started = time.monotonic()
        exc = failure(AgentClient(path, timeout=0.3))
        assert time.monotonic() - started < 5
        assert isinstance(exc, errors.AgentUnreachable) and exc.kind == errors.TIMEOUT
        assert exc.timeout == 0.3 and not exc.connecting
    finally:
        srv.close()


def test_closed_without_answer(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "close.sock")
    stop = serve_once(path, lambda conn: None)
    try:
        exc = failure(AgentClient(path))
        assert isinstance(exc, errors.AgentUnreachable) and exc.kind == errors.CLOSED
    finally:
        stop()


def test_garbage_is_unreadable(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "junk.sock")
    stop = serve_once(path, lambda conn: conn.sendall(b"SSH-2.0-OpenSSH\r\n"))
    try:
        exc = failure(AgentClient(path))
        assert isinstance(exc, errors.UnreadableAnswer)
        assert exc.message == "unreadable answer from the agent to GET /v1/healthz"
    finally:
        stop()


def test_success_body_that_is_not_json(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "html.sock")
    stop = serve_once(path, lambda conn: conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>"))
    try:
        exc = failure(AgentClient(path))
        assert isinstance(exc, errors.UnreadableAnswer)
        assert exc.message == "agent: answered 200 with a body that is not JSON"
    finally:
        stop()


def test_error_answer_is_a_refusal(sock_dir: str) -> None:
    body = b'{"error": "endpoint x not found", "fields": {"id": "x"}}'
    path = os.path.join(sock_dir, "nf.sock")
    stop = serve_once(path, lambda conn: conn.sendall(
        b"HTTP/1.1 404 NOT FOUND\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    try:
        exc = failure(AgentClient(path))
        assert isinstance(exc, errors.RefusedNotFound)
        assert (exc.status, exc.reason, exc.fields) == (404, "endpoint x not found", {"id": "x"})
    finally:
        stop()


def test_stream_yields_lines_as_they_come(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "mon.sock")
    sent = threading.Event()

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"b\r\n{\"a\": 1}\n{\"\r\n")
        sent.wait(5)  # the first line must be readable before the rest is sent
        conn.sendall(b"8\r\nb\": 2}\n\n\r\n0\r\n\r\n")

    stop = serve_once(path, answer)
    try:
        stream = AgentClient(path).stream("GET", "/v1/monitor", {"type": "drop"}, timeout=5)
        assert stream.status == 200
        lines = stream.iter_lines()
        assert next(lines) == b'{"a": 1}'
        sent.set()
        assert list(lines) == [b'{"b": 2}', b""]
        stream.close()
    finally:
        sent.set()
        stop()


def test_full_backlog_is_waited_out_not_reported_unreachable(sock_dir: str) -> None:
    """A unix socket with a full backlog answers EAGAIN at once; the client retries."""
    path = os.path.join(sock_dir, "busy.sock")
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
