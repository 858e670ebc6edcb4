"""What the runtime sees when the agent cannot be asked: real sockets, CNI codes and words.

The transport's own behaviour is tested in tests/unit/client; here each way a call can
fail goes through the plugin's one mapping (:func:`cilium_py.cni.errors.from_agent`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest

from cilium_py.client.agent import AgentClient
from cilium_py.client.errors import AgentError
from cilium_py.cni.errors import INTERNAL, TRY_AGAIN_LATER, AgentUnreachable, CNIError, calling
from tests.support.unix_answer import serve_once
from tests.unit.cni.fake_agent import FakeAgent


def cni_failure(call: Callable[[], object]) -> CNIError:
    with pytest.raises(CNIError) as exc, calling("health"):
        call()
    return exc.value


def test_round_trip_against_the_fake(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.socket_path)
    ep = client.put_endpoint("c1-eth0", {"netns": "/proc/self/ns/net", "interface-name": "eth0"})
    assert ep["id"] == "c1-eth0"
    assert [e["id"] for e in client.list_endpoints()] == ["c1-eth0"]
    assert client.delete_endpoint("c1-eth0") is True
    assert client.delete_endpoint("c1-eth0") is False  # already gone: still success


def test_missing_socket_is_try_again_later(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "none.sock")
    err = cni_failure(AgentClient(path).health)
    assert isinstance(err, AgentUnreachable) and err.code == TRY_AGAIN_LATER
    assert err.msg == f"cilium-py agent not reachable at {path}"
    assert err.details.startswith("connect: [Errno 2]")


def test_hanging_agent_times_out(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "hang.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    try:
        err = cni_failure(AgentClient(path, timeout=0.3).health)
        assert err.code == TRY_AGAIN_LATER
        assert err.details == "no answer to GET /v1/healthz in 0.3s"
    finally:
        srv.close()


def test_agent_closing_without_answer(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "close.sock")
    stop = serve_once(path, lambda conn: None)
    try:
        err = cni_failure(AgentClient(path).health)
        assert err.code == TRY_AGAIN_LATER
        assert err.details == "GET /v1/healthz: connection closed without an answer"
    finally:
        stop()


def test_garbage_answer_is_internal_error(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "junk.sock")
    stop = serve_once(path, lambda conn: conn.sendall(b"SSH-2.0-OpenSSH\r\n"))
    try:
        err = cni_failure(AgentClient(path).health)
        assert err.code == INTERNAL
        assert err.msg == "unreadable answer from the agent to GET /v1/healthz"
    finally:
        stop()


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), calling("x"):
        raise KeyError("not an agent call")
    assert issubclass(AgentUnreachable, CNIError) and not issubclass(CNIError, AgentError)
