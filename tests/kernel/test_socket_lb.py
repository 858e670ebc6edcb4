"""Host-originated connections to services: socket-level balancing (issue 15).

The "host" is a process in the agent's node namespace. The agent attaches its socket
programs to a cgroup this module makes (never the root or anybody else's), and the
host client runs inside it; a second node-namespace process outside that cgroup shows
that the attachment is scoped. Backends are endpoints that answer with their name
(tests/kernel/test_lb.py's helpers), so a client sees where each connection went.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from cilium_py.datapath.lb import LB_CONN, LB_SOCK_REV, LbNat, LbSockKey, LbTuple
from cilium_py.datapath.maps import PinnedMap
from cilium_py.datapath.socklb import HOOKS, SocketLB, cgroup2_mount
from tests.conftest import AGENT, nsenter, require_root, start_agent, unique
from tests.kernel.test_lb import (
    BACKENDS,
    PORT,
    START_TIMEOUT,
    Lab,
    conn_close,
    conn_echo,
    conn_open,
    serve_name,
    tcp_many,
    tcp_who,
    udp_many,
)
from tests.support import netns as nsh

pytestmark = pytest.mark.kernel

VIP4 = "10.96.1.10"
VIP6 = "fd10:96::1:10"
FAMILIES = (("ipv4", VIP4), ("ipv6", VIP6))


# -- run inside the namespaces (module-level: pickled by name) ---------------------------


def tcp_peer(dst: str, port: int = PORT) -> tuple[str, str, int]:
    """(backend's name, getpeername address, port) of one connection to ``dst``."""
    with socket.create_connection((dst, port), timeout=2) as sock:
        peer = sock.getpeername()
        sock.settimeout(2)
        data = b""
        while chunk := sock.recv(64):
            data += chunk
        return data.decode(), peer[0], peer[1]


def udp_connected(dst: str, port: int = PORT) -> tuple[str, str, str]:
    """A connected UDP socket: (reply, getpeername address, recvfrom's source address)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((dst, port))
        peer = sock.getpeername()[0]
        for _ in range(3):
            sock.send(b"who")
            try:
                data, src = sock.recvfrom(64)
                return data.decode(), peer, src[0]
            except TimeoutError:
                continue
        raise TimeoutError("no reply")


def udp_sticky(dst: str, count: int, port: int = PORT) -> set[str]:
    """Backends one unconnected UDP socket reaches over ``count`` datagrams."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    seen = set()
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for _ in range(count):
            sock.sendto(b"who", (dst, port))
            with contextlib.suppress(TimeoutError):
                seen.add(sock.recvfrom(64)[0].decode())
    return seen


def connect_errno(dst: str, port: int = PORT) -> int:
    """0 when a TCP connect to ``dst`` succeeds, else its errno."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((dst, port))
        except OSError as exc:
            return exc.errno or -1
        return 0


# -- the lab -------------------------------------------------------------------------------


def lb_map_rows(bpf_root: str, name: str) -> list[tuple]:
    """Entries of a pinned LB map (cpy_lb_conn: the packet path's; cpy_lb_sock_rev: the
    socket path's), read directly."""
    key = LbSockKey if name == LB_SOCK_REV else LbTuple
    m = PinnedMap(os.path.join(bpf_root, name), key, LbNat)
    try:
        return list(m.items())
    finally:
        m.close()


def join_cgroup(cgroup: str, pid: int) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as fh:
        fh.write(str(pid))


def cgroup_attachments(cgroup: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True,
                         text=True, check=True).stdout.strip()
    return json.loads(out) if out else []


@pytest.fixture(scope="module")
def cgroup():
    """A cgroup of this module's own under the cgroup v2 mount, removed by name."""
    require_root()
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount")
    path = os.path.join(mount, unique("cpyt"))
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(100):  # its processes (our workers) may take a moment to go
            try:
                os.rmdir(path)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.1)
        else:
            pytest.fail(f"cgroup {path} still busy: " +
                        open(os.path.join(path, "cgroup.procs")).read())


@pytest.fixture(scope="module")
def lab(cgroup):
    namespaces = nsh.NamespaceSet()
    make = namespaces.make
    work = tempfile.mkdtemp(prefix="cpyt-")
    bpf_root = f"/sys/fs/bpf/{unique()}"
    args = ("--kafka-proxy", "false", "--l7-proxy", "false", "--socket-lb-cgroup", cgroup)
    workers: dict[str, nsh.NetnsWorker] = {}
    agent = None
    lab = None
    try:
        node = make("cpyt-node")
        agent = start_agent(node, work, bpf_root, *args, timeout=START_TIMEOUT)
        eps, netns = {}, {}
        for name in BACKENDS:
            ns = netns[name] = make("cpyt-ep")
            resp = agent.api("PUT", f"/v1/endpoint/{name}", {
                "netns": f"/var/run/netns/{ns}", "labels": ["container:app=backend"]})
            assert resp.status_code == 201, resp.text
            eps[name] = resp.json()
            workers[name] = nsh.NetnsWorker(ns)
            workers[name].call(serve_name, name)
        # The host client: a node-namespace process inside the cgroup (moved before it
        # makes any socket: a socket belongs to its creator's cgroup). And one outside.
        workers["host"] = nsh.NetnsWorker(node)
        join_cgroup(cgroup, workers["host"].pid)
        workers["outsider"] = nsh.NetnsWorker(node)
        lab = Lab(agent, eps, workers, node, work, bpf_root, args)
        lab.netns = netns
        yield lab
    finally:
        for w in workers.values():
            w.close()
        agent = lab.agent if lab is not None else agent
        if agent is not None:
            agent.stop()
        SocketLB(bpf_root).detach()  # before the cgroup goes (and with a test's failure)
        namespaces.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


@pytest.fixture
def clean(lab):
    lab.clear()
    yield lab
    lab.clear()


# -- tests -----------------------------------------------------------------------------------


def test_hooks_attached_to_the_test_cgroup_only(lab, cgroup) -> None:
    attached = cgroup_attachments(cgroup)
    assert sorted(a["attach_type"] for a in attached) == sorted(
        f"cgroup_{kind}{v}_{hook}" for v in (4, 6) for kind, hook in (
            ("inet", "connect"), ("udp", "sendmsg"), ("udp", "recvmsg"),
            ("inet", "getpeername"))), attached
    health = lab.agent.api("GET", "/v1/healthz").json()["subsystems"]["socket-lb"]
    assert health["status"] == "ok", health
    assert health["details"]["cgroup"] == cgroup
    assert set(health["details"]["hooks"]) == {h.name for h in HOOKS}
    assert cgroup_attachments(os.path.dirname(cgroup)) == [], "nothing on the parent"


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_host_tcp_reaches_every_backend_and_sees_the_frontend(clean, fam, vip) -> None:
    host = clean.workers["host"]
    assert host.call(tcp_who, vip) is None, "no service yet: nothing answers"
    clean.service(1, vip, [clean.addr(b, fam) for b in BACKENDS])
    seen = host.call(tcp_many, vip, 60, timeout=120)
    assert set(seen) == set(BACKENDS), seen
    name, peer, port = host.call(tcp_peer, vip)
    assert name in BACKENDS and (peer, port) == (vip, PORT), "getpeername names the frontend"
    # Balanced at the socket only: the packet path never saw a frontend.
    assert lb_map_rows(clean.bpf_root, LB_CONN) == []
    assert len(lb_map_rows(clean.bpf_root, LB_SOCK_REV)) >= 61


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_host_udp_replies_come_from_the_frontend(clean, fam, vip) -> None:
    host = clean.workers["host"]
    clean.service(2, vip, [clean.addr(b, fam) for b in BACKENDS], protocol="UDP")
    seen = host.call(udp_many, vip, 60, timeout=120)
    assert set(seen) == {f"{b}@{vip}" for b in BACKENDS}, seen
    name, peer, src = host.call(udp_connected, vip)
    assert name in BACKENDS and peer == vip and src == vip
    # One unconnected socket keeps its backend for its datagrams to a frontend.
    assert len(host.call(udp_sticky, vip, 10)) == 1


def test_host_weights_and_weight_zero(clean) -> None:
    clean.service(3, VIP4, [(clean.addr("b1"), 3), (clean.addr("b2"), 1),
                            (clean.addr("b3"), 0)])
    seen = clean.workers["host"].call(tcp_many, VIP4, 400, timeout=300)
    b1, b2 = seen.get("b1", 0), seen.get("b2", 0)
    assert b1 + b2 == 400, seen  # every connection answered; weight 0 gets none
    # 3:1 over 400 connections: b2's share is 100 +- 8.7 (one standard deviation).
    assert 55 < b2 < 145, seen


def test_host_is_one_client_for_session_affinity(clean) -> None:
    clean.service(4, VIP4, [clean.addr(b) for b in BACKENDS],
                  **{"session-affinity": "ClientIP", "session-affinity-timeout": 60})
    seen = clean.workers["host"].call(tcp_many, VIP4, 20, timeout=60)
    assert len(seen) == 1 and set(seen) <= set(BACKENDS), seen


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_process_outside_the_cgroup_is_not_balanced(clean, fam, vip) -> None:
    clean.service(5, vip, [clean.addr(b, fam) for b in BACKENDS])
    assert clean.workers["host"].call(tcp_who, vip) in BACKENDS
    # The node has no route to the frontend: unbalanced, the connect goes nowhere.
    assert clean.workers["outsider"].call(connect_errno, vip) == errno.ENETUNREACH
    assert clean.workers["outsider"].call(tcp_who, clean.addr("b1", fam)) == "b1"


def test_other_namespaces_in_the_cgroup_are_left_to_the_packet_path(clean, cgroup) -> None:
    """A container's process in the cgroup (cgroups span namespaces) is balanced by its
    from_container, as before, not at its socket: only the agent's namespace is."""
    clean.service(7, VIP4, [clean.addr("b2"), clean.addr("b3")])
    rev_before = len(lb_map_rows(clean.bpf_root, LB_SOCK_REV))
    with nsh.NetnsWorker(clean.netns["b1"]) as container:
        join_cgroup(cgroup, container.pid)
        assert container.call(tcp_who, VIP4) in ("b2", "b3")
    conns = lb_map_rows(clean.bpf_root, LB_CONN)
    assert [bytes(k.saddr)[:4] for k, _ in conns] == [socket.inet_aton(clean.addr("b1"))]
    assert len(lb_map_rows(clean.bpf_root, LB_SOCK_REV)) == rev_before


def test_frontend_without_backends_refuses_the_connect(clean) -> None:
    clean.service(6, VIP4, [])
    assert clean.workers["host"].call(connect_errno, VIP4) == errno.EPERM


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_host_connections_survive_agent_kill_and_stop(clean, cgroup, sig) -> None:
    clean.service(10, VIP4, [clean.addr(b) for b in BACKENDS])
    clean.service(20, VIP4, [clean.addr(b) for b in BACKENDS], port=PORT + 1)
    host = clean.workers["host"]
    before = SocketLB(clean.bpf_root).status()
    assert set(before) == {h.name for h in HOOKS}
    try:
        assert host.call(conn_open, VIP4) in BACKENDS
        clean.agent.stop(sig)
        assert host.call(conn_echo), "no agent: the connection keeps flowing"
        assert set(host.call(tcp_many, VIP4, 30, timeout=60)) == set(BACKENDS), \
            "no agent: new host connections are balanced"
        assert host.call(tcp_peer, VIP4)[1] == VIP4
        clean.restart(sig)
        after = SocketLB(clean.bpf_root).status()
        for hook in HOOKS:  # the same links, their programs swapped in place
            assert after[hook.name]["link"] == before[hook.name]["link"]
            assert after[hook.name]["program"] != before[hook.name]["program"]
        assert len(cgroup_attachments(cgroup)) == len(HOOKS), "replaced, not added"
        assert host.call(conn_echo), "after the restart"
        assert set(host.call(tcp_many, VIP4, 30, timeout=60)) == set(BACKENDS)
    finally:
        host.call(conn_close)


def test_cleanup_detaches_socket_lb(lab, cgroup) -> None:
    lab.clear()
    lab.service(30, VIP4, [lab.addr("b1")])
    assert lab.workers["host"].call(tcp_who, VIP4) == "b1"
    lab.agent.stop()
    assert lab.workers["host"].call(tcp_who, VIP4) == "b1", "stopped, not cleaned up"
    res = subprocess.run([*nsenter(lab.node), AGENT, "cleanup", "--state-dir",
                          lab.agent.state_dir, "--socket", lab.agent.socket,
                          "--bpf-root", lab.bpf_root, *lab.args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "detached socket LB (8 hooks" in res.stdout, res.stdout
    assert cgroup_attachments(cgroup) == []
    assert not [p for p in os.listdir(lab.bpf_root) if p.startswith("cpy_sock_")]
    assert lab.workers["host"].call(connect_errno, VIP4) == errno.ENETUNREACH
    # Started again, the agent attaches afresh (and the module's teardown stops it).
    lab.agent = start_agent(lab.node, lab.work, lab.bpf_root, *lab.args,
                            timeout=START_TIMEOUT)
    assert len(cgroup_attachments(cgroup)) == len(HOOKS)
    assert lab.workers["host"].call(tcp_who, VIP4) == "b1"
