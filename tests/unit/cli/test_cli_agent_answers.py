"""What the CLI prints for the agent's answers: refusals, policy wait, bad bodies.

A small HTTP server on a unix socket plays the agent, answering each path as told.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cilium_py.cli import policy
from cilium_py.cli.client import AgentClient, CLIError


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    answers: dict[str, tuple[int, bytes]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, body = self.server.answers[self.path.split("?")[0]]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def agent() -> Iterator[tuple[_Server, str]]:
    tmp = tempfile.mkdtemp(prefix="cpyt-cli-", dir="/tmp")
    path = os.path.join(tmp, "agent.sock")
    server = _Server(path, _Handler)
    server.answers = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, path
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_refusal_is_status_reason_and_the_fields_it_does_not_name(agent) -> None:
    server, path = agent
    server.answers["/v1/endpoint/x"] = (400, json.dumps({
        "error": "invalid labels", "fields": {"labels.0": "bad", "invalid labels": "x"}}).encode())
    with pytest.raises(CLIError) as exc:
        AgentClient(path, timeout=5).get("/v1/endpoint/x")
    assert str(exc.value) == "agent answered 400: invalid labels\n  labels.0: bad"
    assert exc.value.exit_code == 1


def test_policy_wait_not_reached_prints_the_answer_and_fails(agent, capsys) -> None:
    server, path = agent
    server.answers["/v1/policy/wait/7"] = (504, b'{"reached": false, "revision": 7}')
    args = argparse.Namespace(revision=7, timeout=1.0, output="json")
    with pytest.raises(CLIError, match="policy revision 7 not reached in 1s"):
        policy.run_wait(args, AgentClient(path, timeout=5))
    assert json.loads(capsys.readouterr().out) == {"reached": False, "revision": 7}
    server.answers["/v1/policy/wait/7"] = (200, b'{"reached": true, "revision": 7}')
    assert policy.run_wait(argparse.Namespace(revision=7, timeout=1.0, output="table"),
                           AgentClient(path, timeout=5)) == 0
    assert "All endpoints run policy revision 7" in capsys.readouterr().out


def test_success_that_is_not_json_is_one_line(agent) -> None:
    server, path = agent
    server.answers["/v1/healthz"] = (200, b"<html>")
    with pytest.raises(CLIError) as exc:
        AgentClient(path, timeout=5).get("/v1/healthz")
    assert str(exc.value).startswith("agent: answered 200 with a body that is not JSON")
    assert "\n" not in str(exc.value)
