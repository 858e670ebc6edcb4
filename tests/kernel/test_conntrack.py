"""Connection tracking (issue 10, conntrack): TCP state, SYN-only entries, GC, ct list/flush.

Datapath level first, on the three-endpoint node of test_policy_datapath.py: a TCP
packet that is not a SYN and belongs to no tracked connection is dropped
(``ct-missing-syn``) and leaves no entry; FIN both ways or a RST shortens an entry's
lifetime to the closing one (10 s) while an open connection keeps the established one
(6 h). Then through a real agent: ``cilium-py bpf ct list`` shows the state,
``cilium-py bpf ct flush`` empties the table (and an established TCP connection is cut:
its next packet is no SYN), and the agent's garbage collector removes expired entries
and counts them in its metrics.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningAgent, nsenter, start_agent, unique
from tests.kernel.test_policy_datapath import Node, lab, node  # noqa: F401 - fixtures
from tests.support import netns as tn
from tests.support.waiting import poll

pytestmark = pytest.mark.kernel

CLOSE_LIFETIME = 10
TCP_LIFETIME = 21600
SINK_PORT = 9100


def raw_tcp(dst: str, sport: int, dport: int, flags: int) -> None:
    """Send one bare TCP segment (no connection behind it) from this namespace."""
    v6 = ":" in dst
    header = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, flags, 64240, 0, 0)
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
        sock.setsockopt(socket.IPPROTO_IPV6, 7, 16)  # IPV6_CHECKSUM: the kernel fills it
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        sock.connect((dst, 0))
        src = sock.getsockname()[0]
        pseudo = (socket.inet_aton(src) + socket.inet_aton(dst)
                  + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header)))
        csum = tn.inet_checksum(pseudo + header)
        header = header[:16] + struct.pack("!H", csum) + header[18:]
    with sock:
        sock.sendto(header, (dst, 0))


def rst_connection(dst: str, port: int) -> int:
    """Connect, then close with SO_LINGER 0 (a RST); returns the local port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.connect((dst, port))
    lport = sock.getsockname()[1]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return lport


def closed_connection(dst: str, port: int) -> int:
    """Connect, read the greeting, wait for the server's FIN, close; the local port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect((dst, port))
        lport = sock.getsockname()[1]
        while sock.recv(64):
            pass
    return lport


def entries(dp: Node, **match: Any) -> list[dict[str, Any]]:
    return [r for r in dp.call("ct_entries") if all(r.get(k) == v for k, v in match.items())]


FAMILIES = pytest.mark.parametrize("family", ["ipv4", "ipv6"])


@FAMILIES
def test_non_syn_without_connection_is_dropped_and_not_tracked(lab: Node, family: str) -> None:  # noqa: F811
    dst, src = getattr(lab.ep(2), family), getattr(lab.ep(1), family)
    before = lab.call("drop_counters")["ct-missing-syn"]
    for flags in (0x10, 0x18, 0x11):  # ACK, PSH|ACK, FIN|ACK
        lab.worker(1).call(raw_tcp, dst, 40000 + flags, 80, flags)
    ev = tn.find_drop_event(lab.dp, reason_name="ct-missing-syn", src=src, dst=dst, dport=80)
    assert ev is not None, "no ct-missing-syn drop event"
    assert poll(lambda: lab.call("drop_counters")["ct-missing-syn"] - before >= 3, 3)
    assert not [r for r in entries(lab, protocol="tcp", dst=dst, dport=80)
                if r["sport"] >= 40000], "a non-SYN packet created a conntrack entry"
    # A real connection (SYN first) still works, in both directions.
    assert lab.tcp(1, 2, 80, family) and lab.tcp(2, 1, 80, family)


@FAMILIES
def test_fin_and_rst_shorten_lifetime_open_keeps_established(lab: Node, family: str) -> None:  # noqa: F811
    dst = getattr(lab.ep(2), family)
    lab.worker(2).call(tn.tcp_sink_start, "::" if family == "ipv6" else "0.0.0.0", SINK_PORT)
    lab.worker(1).call(tn.tcp_stream_start, dst, SINK_PORT, b"x", 0.2)
    try:
        open_rows = poll(lambda: entries(lab, dst=dst, dport=SINK_PORT) or None, 3)
        assert open_rows and all(r["expires_in"] > TCP_LIFETIME - 60 for r in open_rows)
        assert all(r["state"] == "established" for r in open_rows), open_rows
    finally:
        lab.worker(1).call(tn.tcp_stream_stop, SINK_PORT)
        lab.worker(2).call(tn.tcp_sink_result, SINK_PORT)

    def closed(row_filter: dict[str, Any]) -> list[dict[str, Any]] | None:
        rows = entries(lab, **row_filter)
        return rows if rows and all(r["expires_in"] <= CLOSE_LIFETIME for r in rows) else None

    rows = poll(lambda: closed({"dst": dst, "dport": SINK_PORT}), 3)
    assert rows and all(r["state"] == "closed" for r in rows), entries(lab, dport=SINK_PORT)
    fin_port = lab.worker(1).call(closed_connection, dst, 80)
    assert poll(lambda: closed({"dst": dst, "dport": 80, "sport": fin_port}), 3)
    rst_port = lab.worker(1).call(rst_connection, dst, 8080)
    rows = poll(lambda: closed({"dst": dst, "dport": 8080, "sport": rst_port}), 3)
    assert rows and all("reset" in r["flags"] for r in rows), rows


# -- through the agent ------------------------------------------------------------

PROM_PORT = 9963


def scrape(agent: RunningAgent) -> dict[str, float]:
    out = subprocess.run([*nsenter(agent.netns), "curl", "-sf",
                          f"http://127.0.0.1:{PROM_PORT}/metrics"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    values = {}
    for line in out.splitlines():
        if line.startswith("cilium_py_conntrack_gc"):
            name, _, val = line.partition(" ")
            values[name] = float(val)
    return values


@pytest.fixture(scope="module")
def agent_lab() -> Iterator[tuple[RunningAgent, dict[str, dict], dict[str, tn.NetnsWorker]]]:
    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix="cpyt-")
    bpf_root = f"/sys/fs/bpf/{unique()}"
    names: list[str] = []
    workers: dict[str, tn.NetnsWorker] = {}
    agent = None
    try:
        node_ns = unique("cpyt-node")
        tn.create_netns(node_ns)
        names.append(node_ns)
        agent = start_agent(node_ns, work, bpf_root, "--conntrack-gc-interval", "1",
                            "--prometheus-serve-addr", f"127.0.0.1:{PROM_PORT}",
                            "--kafka-proxy", "false")
        eps = {}
        for name in ("client", "server"):
            ns = unique("cpyt-ep")
            tn.create_netns(ns)
            names.append(ns)
            resp = agent.api("PUT", f"/v1/endpoint/{name}",
                             {"netns": f"/var/run/netns/{ns}", "labels": [f"container:app={name}"]})
            assert resp.status_code == 201, resp.text
            eps[name] = resp.json()
            workers[name] = tn.NetnsWorker(ns)
        workers["server"].call(tn.serve_start, (80,), (53,))
        yield agent, eps, workers
    finally:
        for w in workers.values():
            w.close()
        if agent is not None:
            agent.stop()
        for ns in names:
            tn.delete_netns(ns)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


def ct_list(agent: RunningAgent) -> list[dict[str, Any]]:
    res = agent.cli("bpf", "ct", "list", "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_ct_list_and_flush(agent_lab) -> None:
    agent, eps, workers = agent_lab
    server = eps["server"]["addressing"]["ipv4"]
    workers["server"].call(tn.tcp_sink_start, "0.0.0.0", SINK_PORT)
    workers["client"].call(tn.tcp_stream_start, server, SINK_PORT, b"x", 0.2)
    try:
        rows = poll(lambda: [r for r in ct_list(agent) if r["dport"] == SINK_PORT] or None, 3)
        assert rows and rows[0]["state"] == "established" and rows[0]["protocol"] == "tcp"
        table = agent.cli("bpf", "ct", "list")
        assert table.returncode == 0 and "established" in table.stdout
        flushed = agent.cli("bpf", "ct", "flush", "-o", "json")
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        assert json.loads(flushed.stdout)["deleted"] >= 1
        # The established connection's next packets are no SYN: dropped, never re-tracked.
        drops = agent.api("GET", "/v1/bpf/drops").json()["ct-missing-syn"]
        assert poll(lambda: agent.api("GET", "/v1/bpf/drops").json()["ct-missing-syn"] > drops,
                    3)
        assert not [r for r in ct_list(agent) if r["dport"] == SINK_PORT]
    finally:
        workers["client"].call(tn.tcp_stream_stop, SINK_PORT, timeout=60)
        workers["server"].call(tn.tcp_sink_result, SINK_PORT, 1, timeout=60)
    # New connections are tracked again.
    assert workers["client"].call(tn.tcp_ok, server, 80)


def test_gc_removes_expired_entries_and_counts_them(agent_lab) -> None:
    agent, eps, workers = agent_lab
    server = eps["server"]["addressing"]["ipv4"]
    before = scrape(agent)
    port = workers["client"].call(closed_connection, server, 80)

    def ours() -> list[dict[str, Any]]:
        return [r for r in ct_list(agent) if r["dport"] == 80 and r["sport"] == port]

    rows = ours()
    assert rows and all(r["expires_in"] <= CLOSE_LIFETIME for r in rows), rows
    # Closing lifetime (10 s) plus a GC interval (1 s), with room for a loaded machine.
    assert poll(lambda: not ours(), CLOSE_LIFETIME + 20), ours()
    after = scrape(agent)
    assert after["cilium_py_conntrack_gc_runs_total"] > before["cilium_py_conntrack_gc_runs_total"]
    gone = "cilium_py_conntrack_gc_deleted_entries_total"
    assert after[gone] - before.get(gone, 0) >= len(rows)
