"""L3/L4 load balancing through the real agent (issue 15).

One agent in a node namespace with a client, a second client, three backend endpoints
and an "outside" namespace behind the node's uplink, shared by the module. Backends
answer with their own name (TCP: a greeting; UDP: the reply datagram), so a client
sees which backend a connection reached; a UDP reply's source address shows that
replies come from the frontend.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import pytest

from tests.conftest import RunningAgent, start_agent, unique
from tests.support import netns as nsh

pytestmark = pytest.mark.kernel

PORT = 8000
VIP4 = "10.96.0.10"
VIP6 = "fd10:96::10"
OUTSIDE4 = "198.51.100.2"
OUTSIDE6 = "2001:db8:51::2"
BACKENDS = ("b1", "b2", "b3")
AGENT_ARGS = ("--kafka-proxy", "false")
START_TIMEOUT = 180  # the compile at start takes a minute on a loaded 2-core machine


# -- run inside the namespaces (module-level: pickled by name) ---------------------------


def serve_name(name: str, port: int = PORT) -> None:
    """TCP: send ``name`` and close. UDP: answer every datagram with ``name``. v4 and v6."""
    def accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.sendall(name.encode())

    def answer(sock: socket.socket) -> None:
        while True:
            try:
                _, peer = sock.recvfrom(2048)
                sock.sendto(name.encode(), peer)
            except OSError:
                return

    def echo_conn(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.sendall(name.encode() + b"\n")
            while data := conn.recv(4096):
                conn.sendall(data)

    def echo(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=echo_conn, args=(conn,), daemon=True).start()

    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind, serve, at in ((socket.SOCK_STREAM, accept, port),
                                (socket.SOCK_DGRAM, answer, port),
                                (socket.SOCK_STREAM, echo, port + 1)):
            sock = socket.socket(family, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((any_addr, at))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
            nsh.state().setdefault("servers", []).append(sock)
            threading.Thread(target=serve, args=(sock,), daemon=True).start()


def tcp_who(dst: str, port: int = PORT, timeout: float = 1.0) -> str | None:
    """The name the backend behind ``dst`` greets with; None when nothing answers."""
    try:
        with socket.create_connection((dst, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while chunk := sock.recv(64):
                data += chunk
            return data.decode() or None
    except OSError:
        return None


def tcp_many(dst: str, count: int, port: int = PORT) -> dict[str, int]:
    names = collections.Counter(tcp_who(dst, port) or "-" for _ in range(count))
    return dict(names)


def conn_open(dst: str, port: int = PORT + 1) -> str:
    """Open a long-lived connection to the echo port; the backend's name."""
    sock = socket.create_connection((dst, port), timeout=5)
    sock.settimeout(5)
    name = b""
    while not name.endswith(b"\n"):
        name += sock.recv(64) or b"\n"
    nsh.state()["conn"] = sock
    return name.decode().strip()


def conn_open_close(dst: str, port: int = PORT + 1) -> str:
    """The name of the echo port's backend for one fresh connection."""
    with socket.create_connection((dst, port), timeout=5) as sock:
        sock.settimeout(5)
        name = b""
        while not name.endswith(b"\n"):
            name += sock.recv(64) or b"\n"
        return name.decode().strip()


def conn_echo(payload: bytes = b"still there?") -> bool:
    """Send on the open connection: True when the echo comes back."""
    sock = nsh.state()["conn"]
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += sock.recv(4096) or b"!"
            if got.endswith(b"!"):
                return False
        return got == payload
    except OSError:
        return False


def conn_close() -> None:
    with contextlib.suppress(KeyError, OSError):
        nsh.state().pop("conn").close()


def udp_who(dst: str, port: int = PORT, timeout: float = 1.0) -> tuple[str, str] | None:
    """(name, reply source address) for one datagram from a fresh socket."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"who", (dst, port))
        try:
            data, peer = sock.recvfrom(64)
        except OSError:
            return None
        return data.decode(), peer[0]


def udp_many(dst: str, count: int, port: int = PORT) -> dict[str, int]:
    """``count`` answered datagrams, each from a fresh socket (a loaded machine may lose
    one: it is sent again, from another socket, up to three times)."""
    out: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        for _try in range(3):
            got = udp_who(dst, port)
            if got:
                break
        out[f"{got[0]}@{got[1]}" if got else "-"] += 1
    return dict(out)


# -- the lab -------------------------------------------------------------------------------


class Lab:
    def __init__(self, agent: RunningAgent, eps: dict, workers: dict, node: str, work: str,
                 bpf_root: str, args: tuple[str, ...] = AGENT_ARGS) -> None:
        self.agent = agent
        self.eps = eps
        self.workers = workers
        self.node, self.work, self.bpf_root = node, work, bpf_root
        self.args = args

    def restart(self, sig: int) -> None:
        """Stop the agent with ``sig`` (SIGKILL: a crash) and start it again on the same
        state directory and pins."""
        self.agent.stop(sig)
        self.agent = start_agent(self.node, self.work, self.bpf_root, *self.args,
                                 timeout=START_TIMEOUT)

    def addr(self, name: str, fam: str = "ipv4") -> str:
        if name == "outside":
            return OUTSIDE4 if fam == "ipv4" else OUTSIDE6
        return self.eps[name]["addressing"][fam]

    def service(self, svc_id: int, vip: str, backends: list[tuple[str, int]] | list[str],
                protocol: str = "TCP", port: int = PORT, **options) -> dict:
        body = {"frontend-address": {"ip": vip, "port": port, "protocol": protocol},
                "backend-addresses": [
                    {"ip": b, "port": port} if isinstance(b, str) else
                    {"ip": b[0], "port": port, "weight": b[1]} for b in backends],
                "options": options}
        resp = self.agent.api("PUT", f"/v1/service/{svc_id}", body)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def clear(self) -> None:
        for svc in self.agent.api("GET", "/v1/service").json():
            assert self.agent.api("DELETE", f"/v1/service/{svc['id']}").status_code == 204
        if self.agent.api("GET", "/v1/policy").json()["policy"]:
            resp = self.agent.api("DELETE", "/v1/policy")
            self.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=20")


@pytest.fixture(scope="module")
def lab():
    names: list[str] = []

    def make(prefix: str) -> str:
        n = unique(prefix)
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        names.append(n)
        return n

    work = tempfile.mkdtemp(prefix="cpyt-")
    bpf_root = f"/sys/fs/bpf/{unique()}"
    workers: dict[str, nsh.NetnsWorker] = {}
    agent = None
    try:
        node = make("cpyt-node")
        agent = start_agent(node, work, bpf_root, *AGENT_ARGS, timeout=START_TIMEOUT)
        eps = {}
        for name, app in (("client", "client"), ("other", "other"),
                          *((b, "backend") for b in BACKENDS)):
            ns = make("cpyt-ep")
            resp = agent.api("PUT", f"/v1/endpoint/{name}", {
                "netns": f"/var/run/netns/{ns}", "labels": [f"container:app={app}"]})
            assert resp.status_code == 201, resp.text
            eps[name] = resp.json()
            workers[name] = nsh.NetnsWorker(ns)
            if app == "backend":
                workers[name].call(serve_name, name)
        outside = make("cpyt-out")
        nsh.add_veth(node, "cpyup0", outside, "eth0")
        nsh.ip(node, "addr", "add", "198.51.100.1/24", "dev", "cpyup0")
        nsh.ip(node, "-6", "addr", "add", "2001:db8:51::1/64", "dev", "cpyup0", "nodad")
        nsh.ip(node, "link", "set", "cpyup0", "up")
        nsh.ip(outside, "addr", "add", f"{OUTSIDE4}/24", "dev", "eth0")
        nsh.ip(outside, "-6", "addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad")
        nsh.ip(outside, "link", "set", "eth0", "up")
        nsh.ip(outside, "route", "add", "10.0.0.0/8", "via", "198.51.100.1")
        nsh.ip(outside, "-6", "route", "add", "fd10::/16", "via", "2001:db8:51::1")
        nsh.sysctl(node, "net.ipv6.conf.all.forwarding", "1")
        workers["outside"] = nsh.NetnsWorker(outside)
        workers["outside"].call(serve_name, "outside")
        lab = Lab(agent, eps, workers, node, work, bpf_root)
        yield lab
        agent = lab.agent
    finally:
        for w in workers.values():
            w.close()
        if agent is not None:
            agent.stop()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


@pytest.fixture
def clean(lab):
    lab.clear()
    yield lab
    lab.clear()


FAMILIES = (("ipv4", VIP4), ("ipv6", VIP6))


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_tcp_connections_spread_over_every_backend(clean, fam, vip) -> None:
    assert clean.workers["client"].call(tcp_who, vip) is None, "no service yet: no answer"
    clean.service(1, vip, [clean.addr(b, fam) for b in BACKENDS])
    seen = clean.workers["client"].call(tcp_many, vip, 60, timeout=120)
    assert set(seen) == set(BACKENDS), seen  # every connection answered, all backends used


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_udp_replies_come_from_the_frontend(clean, fam, vip) -> None:
    clean.service(2, vip, [clean.addr(b, fam) for b in BACKENDS], protocol="UDP")
    seen = clean.workers["client"].call(udp_many, vip, 60, timeout=120)
    assert set(seen) == {f"{b}@{vip}" for b in BACKENDS}, seen


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_remote_backend_through_the_node(clean, fam, vip) -> None:
    clean.service(3, vip, [clean.addr("outside", fam)])
    assert clean.workers["client"].call(tcp_who, vip) == "outside"
    clean.service(3, vip, [clean.addr("outside", fam)], protocol="UDP")
    assert clean.workers["client"].call(udp_who, vip) == ("outside", vip)


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_backend_policy_applies_with_the_clients_identity(clean, fam, vip) -> None:
    clean.service(4, vip, [clean.addr(b, fam) for b in BACKENDS])
    rule = {"endpointSelector": {"matchLabels": {"app": "backend"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}
    resp = clean.agent.api("PUT", "/v1/policy", [rule])
    assert resp.status_code == 200, resp.text
    wait = clean.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=20")
    assert wait.status_code == 200, wait.text
    assert set(clean.workers["client"].call(tcp_many, vip, 20, timeout=60)) <= set(BACKENDS)
    assert clean.workers["other"].call(tcp_many, vip, 5, timeout=60) == {"-": 5}
    # Egress policy of the client sees the backend's identity, not the frontend.
    egress = {"endpointSelector": {"matchLabels": {"app": "other"}},
              "egress": [{"toEndpoints": [{"matchLabels": {"app": "backend"}}]}]}
    resp = clean.agent.api("PUT", "/v1/policy", [rule, egress], timeout=60)
    clean.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=20")
    assert clean.workers["other"].call(tcp_many, vip, 3, timeout=60) == {"-": 3}


def test_weights_and_weight_zero(clean) -> None:
    clean.service(5, VIP4, [(clean.addr("b1"), 3), (clean.addr("b2"), 1),
                            (clean.addr("b3"), 0)], protocol="UDP")
    seen = clean.workers["client"].call(udp_many, VIP4, 1000, timeout=600)
    b1, b2 = seen.get(f"b1@{VIP4}", 0), seen.get(f"b2@{VIP4}", 0)
    assert b1 + b2 == 1000, seen  # weight 0 gets nothing
    # 3:1 over 1,000 flows: b2's share is 250 +- 14 (one standard deviation); allow 6.
    assert 165 < b2 < 335, seen


def test_bpf_lb_list_and_service_cli(clean) -> None:
    res = clean.agent.cli("service", "update", "--id", "7", "--frontend", f"{VIP4}:{PORT}",
                          "--backends", f"{clean.addr('b1')}:{PORT},{clean.addr('b2')}:{PORT}/2")
    assert res.returncode == 0, res.stderr
    res = clean.agent.cli("service", "list")
    assert f"{VIP4}:{PORT}/TCP" in res.stdout and f"{clean.addr('b2')}:{PORT}" in res.stdout
    res = clean.agent.cli("bpf", "lb", "list", "-o", "json")
    assert res.returncode == 0, res.stderr
    import json

    rows = json.loads(res.stdout)
    assert [(r["service"], r["frontend"], r["slots"]) for r in rows] == [
        (7, f"{VIP4}:{PORT}", 3)]
    assert sorted((b["address"], b["slots"]) for b in rows[0]["backends"]) == [
        (clean.addr("b1"), 1), (clean.addr("b2"), 2)]
    assert clean.workers["client"].call(tcp_who, VIP4) in ("b1", "b2")
    res = clean.agent.cli("service", "delete", "7")
    assert res.returncode == 0, res.stderr
    assert clean.agent.cli("bpf", "lb", "list", "-o", "json").stdout.strip() == "[]"
    assert clean.workers["client"].call(tcp_who, VIP4) is None


def test_frontend_clashes_are_refused(clean) -> None:
    body = {"frontend-address": {"ip": clean.addr("b1"), "port": PORT},
            "backend-addresses": [{"ip": clean.addr("b2"), "port": PORT}]}
    resp = clean.agent.api("PUT", "/v1/service/8", body)
    assert resp.status_code == 409 and "frontend-address.ip" in resp.json()["fields"], resp.text
    clean.service(8, VIP4, [clean.addr("b1")])
    body["frontend-address"]["ip"] = VIP4
    resp = clean.agent.api("PUT", "/v1/service/9", body)
    assert resp.status_code == 409 and "frontend-address" in resp.json()["fields"], resp.text
    assert [s["id"] for s in clean.agent.api("GET", "/v1/service").json()] == [8]


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_connections_survive_agent_kill_and_stop(clean, fam, vip) -> None:
    clean.service(10, vip, [clean.addr(b, fam) for b in BACKENDS])
    clean.service(20, vip, [clean.addr(b, fam) for b in BACKENDS], port=PORT + 1)
    client = clean.workers["client"]
    try:
        assert client.call(conn_open, vip) in BACKENDS
        for sig in (signal.SIGKILL, signal.SIGTERM):
            clean.agent.stop(sig)
            assert client.call(conn_echo), "no agent: the connection keeps flowing"
            assert client.call(tcp_who, vip) in BACKENDS, "and new ones are balanced"
            clean.restart(sig)
            assert client.call(conn_echo), f"after restart ({sig.name})"
            assert [s["id"] for s in clean.agent.api("GET", "/v1/service").json()] == [10, 20]
            assert set(client.call(tcp_many, vip, 30, timeout=60)) == set(BACKENDS)
    finally:
        client.call(conn_close)


@pytest.mark.parametrize(("fam", "vip"), FAMILIES)
def test_removed_backend_gets_no_new_connections_and_keeps_its_own(clean, fam, vip) -> None:
    clean.service(11, vip, [clean.addr(b, fam) for b in BACKENDS], port=PORT + 1)
    client = clean.workers["client"]
    try:
        gone = client.call(conn_open, vip)
        stay = [b for b in BACKENDS if b != gone]
        clean.service(11, vip, [clean.addr(b, fam) for b in stay], port=PORT + 1)
        clean.service(21, vip, [clean.addr(b, fam) for b in stay])
        assert set(client.call(tcp_many, vip, 30, timeout=60)) == set(stay)
        seen = {client.call(conn_open_close, vip) for _ in range(20)}
        assert seen == set(stay), seen
        assert client.call(conn_echo), "a removed backend's connection is left to finish"
    finally:
        client.call(conn_close)


def test_session_affinity_by_client_address(clean) -> None:
    clean.service(12, VIP4, [clean.addr(b) for b in BACKENDS],
                  **{"session-affinity": "ClientIP", "session-affinity-timeout": 60})
    for who in ("client", "other"):
        seen = clean.workers[who].call(tcp_many, VIP4, 20, timeout=60)
        assert len(seen) == 1 and set(seen) <= set(BACKENDS), seen


def test_monitor_trace_names_frontend_and_backend(clean) -> None:
    from tests.kernel.test_monitor import MonitorProc

    clean.service(13, VIP6, [clean.addr("b2", "ipv6")])
    mon = MonitorProc(clean.agent, "--type", "trace")
    try:
        import time

        time.sleep(0.5)  # subscribed
        # Trace events are limited to 100 a second per CPU: a test just before may
        # have used this second's, so connect until one comes.
        ev = None
        for _ in range(5):
            assert clean.workers["client"].call(tcp_who, VIP6) == "b2"
            try:
                ev = mon.wait_for(lambda e: e.get("observation") == "service", timeout=2)
                break
            except AssertionError:
                continue
        assert ev is not None, mon.lines[-5:]
        assert ev["frontend"] == f"[{VIP6}]:{PORT}"
        assert ev["backend"] == f"[{clean.addr('b2', 'ipv6')}]:{PORT}"
        assert ev["src"] == clean.addr("client", "ipv6") and ev["service"] == 13
        assert ev.get("endpoint") == "client"
    finally:
        mon.stop()
