"""Masquerade of endpoint traffic leaving a test-made node for an "outside" host.

Topology, all in namespaces this test makes::

    endpoint ns --veth-- node ns --veth (cpyt_up)-- outside ns
    10.220.0.11          198.51.100.1               198.51.100.2
    fd10:220::11         2001:db8:220::1            2001:db8:220::2

The outside host has no route to the pools, so an answer can only come back when
the node rewrote the source to its own address. The node's FORWARD policy is set
to DROP first, as dockerd does, so the agent's FORWARD rules are exercised too.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.endpoint import plumbing
from cilium_py.endpoint.masquerade import Masquerade
from tests.support import netns as tn

pytestmark = pytest.mark.kernel

POOL4, POOL6 = "10.220.0.0/24", "fd10:220::/120"
GW4, GW6 = "10.220.0.1", "fd10:220::1"
EP4, EP6 = "10.220.0.11", "fd10:220::11"
NODE4, NODE6 = "198.51.100.1", "2001:db8:220::1"
OUT4, OUT6 = "198.51.100.2", "2001:db8:220::2"


@dataclass
class Topology:
    node: str
    endpoint: str
    outside: str
    worker: tn.NetnsWorker  # in the node namespace: runs what the agent would


@pytest.fixture
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made: list[str] = []
    worker = None
    try:
        node = tn.create_netns(tn.unique_name("cpyt-nd"))
        made.append(node)
        outside = tn.create_netns(tn.unique_name("cpyt-out"))
        made.append(outside)
        endpoint = tn.create_netns(tn.unique_name("cpyt-ep"))
        made.append(endpoint)
        tn.add_veth(node, "cpyt_up", outside, "eth0")
        tn.ip(node, "addr", "add", f"{NODE4}/24", "dev", "cpyt_up")
        tn.ip(node, "addr", "add", f"{NODE6}/64", "dev", "cpyt_up", "nodad")
        tn.ip(outside, "addr", "add", f"{OUT4}/24", "dev", "eth0")
        tn.ip(outside, "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")
        for tool in ("iptables", "ip6tables"):
            tn.ns_exec(node, tool, "-w", "-P", "FORWARD", "DROP")
        worker = tn.NetnsWorker(node)
        worker.call(plumbing.ensure_router_device, "cpyt_host", GW4, GW6, POOL4, POOL6)
        worker.call(
            plumbing.create_endpoint_link,
            "masq-ep",
            f"/var/run/netns/{endpoint}",
            "eth0",
            EP4,
            EP6,
            GW4,
            GW6,
        )
        yield Topology(node, endpoint, outside, worker)
    finally:
        if worker is not None:
            worker.close()
        for name in reversed(made):
            tn.delete_netns(name)


# Run inside the outside namespace: accept one connection, remember who it came from.


def serve_once(bind: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((bind, port))
    lsock.listen(1)
    lsock.settimeout(10)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            conn, peer = lsock.accept()
            with conn:
                result["peer"] = peer[0]
                conn.sendall(b"hello from outside")
        except OSError as exc:
            result["error"] = repr(exc)
        finally:
            lsock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    tn.state()[f"serve:{port}"] = (thread, result)


def served(port: int) -> dict[str, Any]:
    thread, result = tn.state().pop(f"serve:{port}")
    thread.join(10)
    return result


def fetch(dst: str, port: int) -> bytes:
    with socket.create_connection((dst, port), timeout=5) as sock:
        return sock.recv(100)


def iptables_save(netns: str) -> set[str]:
    """The rules, user chains and non-default policies of both families.

    Tables themselves are left out: iptables-nft creates a table lazily on first use
    and keeps it (empty, all policies ACCEPT) afterwards, which changes nothing.
    """
    result = set()
    for tool, family in (("iptables-save", "4"), ("ip6tables-save", "6")):
        table = ""
        for line in tn.ns_exec(netns, tool).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A") or (
                line.startswith(":") and not line.split()[1] == "ACCEPT"
            ):
                result.add(f"{family} {table} {line.split(' [')[0]}")
    return result


def test_masquerade_to_outside_and_clean_removal(topo: Topology) -> None:
    tn.ns_exec(
        topo.node,
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.99.0.0/16",
        "-m",
        "comment",
        "--comment",
        "not-ours",
        "-j",
        "MASQUERADE",
    )
    before = iptables_save(topo.node)
    for dst in (OUT4, OUT6):
        assert tn.run_in_netns(topo.endpoint, tn.ping, dst, 1, 0.3) == 0

    masq = Masquerade(POOL4, POOL6)
    topo.worker.call(masq.install)
    installed = iptables_save(topo.node)
    assert any("not-ours" in line for line in before)
    assert "4 filter :FORWARD DROP" in before and "6 filter :FORWARD DROP" in before
    added = installed - before
    assert len(added) == 14 and all("CILIUM_PY" in line for line in added), added
    topo.worker.call(masq.install)  # idempotent
    assert iptables_save(topo.node) == installed
    assert topo.worker.call(masq.installed) == {
        "ipv4": {"CILIUM_PY_POSTROUTING": True, "CILIUM_PY_FORWARD": True},
        "ipv6": {"CILIUM_PY_POSTROUTING": True, "CILIUM_PY_FORWARD": True},
    }
    nat = tn.ns_exec(topo.node, "iptables", "-w", "-t", "nat", "-S")
    assert f"-A CILIUM_PY_POSTROUTING -s {POOL4} ! -d {POOL4}" in nat
    assert "-A POSTROUTING -m comment --comment cilium-py -j CILIUM_PY_POSTROUTING" in nat

    for dst, node_addr, port in ((OUT4, NODE4, 7001), (OUT6, NODE6, 7002)):
        assert tn.run_in_netns(topo.endpoint, tn.ping, dst, count=1) == 1, dst
        with tn.NetnsWorker(topo.outside) as server:
            server.call(serve_once, dst, port)
            assert tn.run_in_netns(topo.endpoint, fetch, dst, port) == b"hello from outside"
            result = server.call(served, port)
        assert result.get("peer") == node_addr, result

    topo.worker.call(masq.remove)
    topo.worker.call(masq.remove)  # harmless twice
    assert iptables_save(topo.node) == before  # exactly what was added is gone
    for dst in (OUT4, OUT6):
        assert tn.run_in_netns(topo.endpoint, tn.ping, dst, 1, 0.3) == 0


def test_ipv4_only_and_excluded_destinations(topo: Topology) -> None:
    masq = Masquerade(POOL4, None, no_masquerade_to=["198.51.100.0/24"])
    topo.worker.call(masq.install)
    try:
        nat = tn.ns_exec(topo.node, "iptables", "-w", "-t", "nat", "-S", "CILIUM_PY_POSTROUTING")
        assert f"-s {POOL4} -d 198.51.100.0/24" in nat and "RETURN" in nat
        assert "CILIUM_PY" not in tn.ns_exec(topo.node, "ip6tables-save")
        # excluded: the outside sees the endpoint's own address (and cannot answer)
        assert tn.run_in_netns(topo.endpoint, tn.ping, OUT4, 1, 0.3) == 0
    finally:
        topo.worker.call(masq.remove)
    assert "CILIUM_PY" not in tn.ns_exec(topo.node, "iptables-save")


def _install_without_iptables(masq: Masquerade) -> str:
    os.environ["PATH"] = "/nonexistent"
    try:
        masq.install()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return f"{type(exc).__name__}: {exc}"
    return "installed"


def test_missing_iptables_is_a_clear_error(topo: Topology) -> None:
    with tn.NetnsWorker(topo.node) as worker:
        outcome = worker.call(_install_without_iptables, Masquerade(POOL4, None))
    assert outcome.startswith("Unavailable: iptables") and "apt-get install iptables" in outcome


def test_bad_prefixes_are_refused() -> None:
    from cilium_py.errors import InvalidInput

    with pytest.raises(InvalidInput):
        Masquerade("10.220.0.1/24", None)
    with pytest.raises(InvalidInput):
        Masquerade(POOL6, None)
    with pytest.raises(InvalidInput):
        Masquerade(POOL4, None, no_masquerade_to=["nonsense"])
