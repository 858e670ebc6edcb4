"""Policy that revokes (issue 10): a removed allow stops ESTABLISHED connections.

The datapath checks policy for every packet in a connection's original direction, so
an established TCP connection that a new policy no longer allows is cut within the
policy-change latency (here: within 1 s of ``cilium-py policy import`` returning),
and the dropped packets are counted as policy drops; replies of connections that stay
allowed still pass. Reuses the agent lab of test_policy_agent.py (server, client,
devclient, other and an outside namespace on the node's uplink).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from typing import Any

import pytest

from tests.kernel.test_policy_agent import clean, lab  # noqa: F401 - fixtures
from tests.support import netns as nsh

ECHO_PORT = 7777
CUT_WITHIN = 1.0  # seconds after the import returned


def echo_serve_start(port: int = ECHO_PORT) -> None:
    """Echo every byte back, any number of connections, v4 and v6, until the worker ends."""
    st = nsh.state()
    if st.get(f"echo:{port}"):
        return

    def conn_loop(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                return

    def accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=conn_loop, args=(conn,), daemon=True).start()

    socks = []
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, port))
        sock.listen(16)
        socks.append(sock)
        threading.Thread(target=accept, args=(sock,), daemon=True).start()
    st[f"echo:{port}"] = socks


def pinger_start(dst: str, port: int = ECHO_PORT, interval: float = 1.0) -> None:
    """Open one connection and send a byte every ``interval``; record when each echo
    comes back (time.monotonic, the same clock in every namespace)."""
    sock = socket.create_connection((dst, port), timeout=5)
    sock.settimeout(0.2)
    stop = threading.Event()
    info: dict[str, Any] = {"echoes": [], "sent": 0, "error": None}

    def run() -> None:
        try:
            while not stop.is_set():
                sock.sendall(b"x")
                info["sent"] += 1
                deadline = time.monotonic() + interval
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        data = sock.recv(64)
                    except TimeoutError:
                        continue
                    if not data:
                        info["error"] = "closed by peer"
                        return
                    info["echoes"].extend([time.monotonic()] * len(data))
        except OSError as exc:
            info["error"] = repr(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    nsh.state()["pinger"] = (thread, stop, info)


def pinger_echoes() -> list[float]:
    return list(nsh.state()["pinger"][2]["echoes"])


def pinger_stop() -> dict[str, Any]:
    thread, stop, info = nsh.state().pop("pinger")
    stop.set()
    thread.join(5)
    return dict(info)


def policy_drops(agent: Any) -> int:
    resp = agent.api("GET", "/v1/bpf/drops")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["policy-denied"])


def import_rules(agent: Any, rules: list[dict[str, Any]]) -> float:
    """``cilium-py policy import`` a file; returns time.monotonic() when it returned."""
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(rules, fh)
        res = agent.cli("policy", "import", path)
        done = time.monotonic()
        assert res.returncode == 0, res.stdout + res.stderr
        return done
    finally:
        os.unlink(path)


def established_then_revoked(lab: Any, sender: nsh.NetnsWorker, dst: str,  # noqa: F811
                             revoke: list[dict[str, Any]]) -> None:
    """An established connection from ``sender`` to ``dst`` answers; after the import of
    ``revoke`` no echo arrives later than CUT_WITHIN and policy drops were counted."""
    sender.call(pinger_start, dst)
    try:
        ok = nsh_wait(lambda: len(sender.call(pinger_echoes)) >= 2, 10)
        assert ok, "the connection never worked before the revocation"
        before = policy_drops(lab.agent)
        done = import_rules(lab.agent, revoke)
        time.sleep(CUT_WITHIN + 2.5)
        late = [t - done for t in sender.call(pinger_echoes) if t > done + CUT_WITHIN]
        assert not late, f"echoes still arrived {late} s after the revoking import"
        assert policy_drops(lab.agent) > before, "the cut packets were not policy drops"
    finally:
        sender.call(pinger_stop)


def nsh_wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def server_only_from(app: str) -> dict[str, Any]:
    return {"endpointSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": app}}]}],
            "labels": [{"key": "test", "value": "revoke", "source": "unspec"}]}


@pytest.fixture
def echo(clean):  # noqa: F811 - the fixture imported above
    for name in ("server", "outside"):
        clean.workers[name].call(echo_serve_start)
    return clean


@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
def test_revoked_ingress_cuts_established_local_connection(echo, fam: str) -> None:
    # client -> server is delivered directly (one conntrack entry for both sides).
    established_then_revoked(echo, echo.workers["client"], echo.addr("server", fam),
                             [server_only_from("other")])
    # The allowed peer still connects, and so do replies to the server's own flows.
    assert echo.tcp("other", "server", 80, fam)
    assert echo.tcp("server", "client", 80, fam)


def test_revoked_ingress_cuts_established_connection_from_outside(echo) -> None:
    # outside -> server arrives through the host stack (to_container).
    established_then_revoked(echo, echo.workers["outside"], echo.addr("server"),
                             [server_only_from("other")])


def test_revoked_egress_cuts_established_connection(echo) -> None:
    # client -> outside leaves through the host stack; then client's egress is narrowed.
    established_then_revoked(echo, echo.workers["client"], "198.51.100.2", [{
        "endpointSelector": {"matchLabels": {"app": "client", "env": "prod"}},
        "egress": [{"toEndpoints": [{"matchLabels": {"app": "server"}}]}],
        "labels": [{"key": "test", "value": "revoke", "source": "unspec"}]}])
    assert echo.tcp("client", "server", 80)
