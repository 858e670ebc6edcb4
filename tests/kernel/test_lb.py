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

    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind, serve in ((socket.SOCK_STREAM, accept), (socket.SOCK_DGRAM, answer)):
            sock = socket.socket(family, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((any_addr, port))
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
    def __init__(self, agent: RunningAgent, eps: dict, workers: dict) -> None:
        self.agent = agent
        self.eps = eps
        self.workers = workers

    def addr(self, name: str, fam: str = "ipv4") -> str:
        if name == "outside":
            return OUTSIDE4 if fam == "ipv4" else OUTSIDE6
        return self.eps[name]["addressing"][fam]

    def service(self, svc_id: int, vip: str, backends: list[tuple[str, int]] | list[str],
                protocol: str = "TCP", **options) -> dict:
        body = {"frontend-address": {"ip": vip, "port": PORT, "protocol": protocol},
                "backend-addresses": [
                    {"ip": b, "port": PORT} if isinstance(b, str) else
                    {"ip": b[0], "port": PORT, "weight": b[1]} for b in backends],
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
        agent = start_agent(node, work, bpf_root, "--kafka-proxy", "false")
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
        yield Lab(agent, eps, workers)
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
    seen = clean.workers["client"].call(udp_many, VIP4, 400, timeout=300)
    b1, b2 = seen.get(f"b1@{VIP4}", 0), seen.get(f"b2@{VIP4}", 0)
    assert b1 + b2 == 400, seen  # weight 0 gets nothing
    assert 2.0 < b1 / b2 < 4.5, seen  # 3:1 within a wide tolerance (400 draws)


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
