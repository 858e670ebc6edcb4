"""The plugin's HTTP server, spoken to in raw bytes the way an HTTP/1.1 client may."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from typing import Any

import pytest

from cilium_py.docker.main import serve
from cilium_py.docker.protocol import PLUGIN_CONTENT_TYPE
from cilium_py.docker.server import PluginServer


class Recorder:
    """A dispatcher that echoes what it got; ``delay`` makes each call take that long."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str, bytes]] = []
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, verb: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls.append((verb, path, body))
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
        return 200, {"path": path, "body": body.decode()}


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response; returns status, headers (lower-case names) and body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        rest += sock.recv(4096)
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_calls_on_one_kept_alive_connection(serve_driver):
    rec = Recorder()
    sock = _connect(serve_driver(rec))
    for i in range(3):
        sock.sendall(f"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n"
                     f"Content-Length: 2\r\n\r\n{i}{i}".encode())
        status, headers, body = _read_reply(sock)
        assert status == 200
        assert headers["content-type"] == PLUGIN_CONTENT_TYPE
        assert json.loads(body) == {"path": "/Plugin.Activate", "body": f"{i}{i}"}
    assert len(rec.calls) == 3
    sock.close()


def test_chunked_body(serve_driver):
    rec = Recorder()
    sock = _connect(serve_driver(rec))
    sock.sendall(b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: plugin\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"a\":\r\n3;ext=1\r\n 1}\r\n0\r\n\r\n")
    status, _, body = _read_reply(sock)
    assert status == 200
    assert json.loads(body)["body"] == '{"a": 1}'


def test_expect_continue_gets_100_then_the_answer(serve_driver):
    sock = _connect(serve_driver(Recorder()))
    sock.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n"
                 b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"{}")
    assert _read_reply(sock)[0] == 200


@pytest.mark.parametrize("request_bytes", [
    b"POST /Plugin.Activate HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"POST /Plugin.Activate HTTP/1.0\r\n\r\n",
])
def test_connection_close_is_honoured(serve_driver, request_bytes):
    sock = _connect(serve_driver(Recorder()))
    sock.sendall(request_bytes)
    status, headers, _ = _read_reply(sock)
    assert status == 200 and headers["connection"] == "close"
    assert _closed(sock)


@pytest.mark.parametrize("request_bytes", [
    b"garbage\r\n\r\n",
    b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /Plugin.Activate HTTP/1.1\r\nno colon here\r\n\r\n",
    b"POST /NetworkDriver.Join HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_malformed_request_is_400_with_err_and_closes(serve_driver, request_bytes):
    rec = Recorder()
    sock = _connect(serve_driver(rec))
    sock.sendall(request_bytes)
    status, _, body = _read_reply(sock)
    assert status == 400
    assert "bad HTTP request" in json.loads(body)["Err"]
    assert _closed(sock)
    assert rec.calls == []


def test_socket_is_for_root_only(serve_driver):
    path = serve_driver(Recorder())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_calls_at_once_are_capped_by_threads(serve_driver):
    rec = Recorder(delay=0.1)
    path = serve_driver(rec, threads=2)
    socks = [_connect(path) for _ in range(4)]
    for sock in socks:
        sock.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert all(_read_reply(sock)[0] == 200 for sock in socks)
    assert rec.most == 2
    for sock in socks:
        sock.close()


def test_sigterm_lets_a_call_in_progress_finish(tmp_path_factory):
    """A restart of the plugin never cuts a call in half (dockerd would see an error)."""
    path = os.path.join(str(tmp_path_factory.mktemp("srv")), "p.sock")
    rec = Recorder(delay=0.4)
    server = PluginServer(rec, path, threads=2)
    answers: list[int] = []

    def client() -> None:
        while not os.path.exists(path):
            time.sleep(0.01)
        sock = _connect(path)
        sock.sendall(b"POST /NetworkDriver.CreateEndpoint HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        while not rec.calls:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # while the call runs
        answers.append(_read_reply(sock)[0])
        sock.close()

    thread = threading.Thread(target=client)
    thread.start()
    serve(server, grace=5)
    thread.join(5)
    assert answers == [200]
    with pytest.raises(OSError):
        _connect(path)
