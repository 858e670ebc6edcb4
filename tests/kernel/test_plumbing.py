"""Endpoint plumbing in real namespaces: a test-made node with two "containers".

The plumbing runs in a worker process that entered the node namespace, exactly
as the agent would run there; nothing touches the machine's own namespace. What
the plumbing made is checked with ``ip -j`` (not with the code under test), and
traffic goes through the node's own stack (no BPF is attached here).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cilium_py.endpoint import plumbing
from tests.support import netns as tn

pytestmark = pytest.mark.kernel

POOL4, POOL6 = "10.210.0.0/24", "fd10:210::/120"
GW4, GW6 = "10.210.0.1", "fd10:210::1"
EP1 = ("10.210.0.11", "fd10:210::11")
EP2 = ("10.210.0.12", "fd10:210::12")
ROUTER_DEV = "cpyt_host"


def catching(func: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run in a worker: the result, or the exception's class, status and message
    (exceptions themselves do not cross the process boundary intact)."""
    try:
        return {"ok": True, "value": func(*args, **kwargs)}
    except Exception as exc:  # noqa: BLE001 - inspected by the test
        return {
            "ok": False,
            "type": type(exc).__name__,
            "status": getattr(exc, "status", None),
            "message": str(exc),
            "trace": traceback.format_exc(),
        }


def ip_json(netns: str, *args: str) -> list[dict[str, Any]]:
    out = tn.ip(netns, "-j", *args)
    return json.loads(out) if out.strip() else []


@dataclass
class Node:
    name: str
    worker: tn.NetnsWorker
    made: list[str]  # endpoint namespaces to delete at teardown

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.worker.call(func, *args, **kwargs)

    def expect_error(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        outcome = self.worker.call(catching, func, *args, **kwargs)
        assert not outcome["ok"], f"expected an error, got {outcome.get('value')!r}"
        return outcome

    def endpoint_ns(self) -> str:
        name = tn.create_netns(tn.unique_name("cpyt-ep"))
        self.made.append(name)
        return name

    def leftovers(self) -> dict[str, Any]:
        """Everything endpoint-shaped in the node: veths, routes and neighbours
        into the pools (the router device's own are not endpoint leftovers)."""
        links = [
            link["ifname"]
            for link in ip_json(self.name, "link", "show", "type", "veth")
            if not link["ifname"].startswith(ROUTER_DEV)
        ]
        routes = [
            r["dst"]
            for fam in ("-4", "-6")
            for r in ip_json(self.name, fam, "route", "show")
            if r["dst"].startswith(("10.210.", "fd10:210:")) and r.get("dev") != ROUTER_DEV
        ]
        neigh = [
            n["dst"]
            for n in ip_json(self.name, "neigh", "show")
            if n["dst"].startswith(("10.210.", "fd10:210:"))
        ]
        return {"links": links, "routes": routes, "neigh": neigh}


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = tn.create_netns(tn.unique_name("cpyt-nd"))
    made: list[str] = []
    worker = None
    try:
        worker = tn.NetnsWorker(name)
        yield Node(name, worker, made)
    finally:
        if worker is not None:
            worker.close()
        for ep in made:
            tn.delete_netns(ep)
        tn.delete_netns(name)


@pytest.fixture
def routed_node(node: Node) -> Node:
    node.call(plumbing.ensure_router_device, ROUTER_DEV, GW4, GW6, POOL4, POOL6)
    return node


def attach(node: Node, ep_id: str, netns: str, addrs: tuple[str | None, str | None]) -> Any:
    return node.call(
        plumbing.create_endpoint_link,
        ep_id,
        f"/var/run/netns/{netns}",
        "eth0",
        ipv4=addrs[0],
        ipv6=addrs[1],
        gw4=GW4 if addrs[0] else None,
        gw6=GW6 if addrs[1] else None,
    )


# ---------------------------------------------------------------------------


def test_router_device_is_idempotent_and_removable(node: Node) -> None:
    first = node.call(plumbing.ensure_router_device, ROUTER_DEV, GW4, GW6, POOL4, POOL6)
    again = node.call(plumbing.ensure_router_device, ROUTER_DEV, GW4, GW6, POOL4, POOL6)
    assert first == again
    assert first["ipv4"] == GW4 and first["ipv6"] == GW6
    assert first["peer"] == "cpyt_host_net"
    assert "UP" in ip_json(node.name, "link", "show", "cpyt_host_net")[0]["flags"]
    (link,) = ip_json(node.name, "addr", "show", "dev", ROUTER_DEV)
    assert "UP" in link["flags"]
    addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["scope"] == "global"}
    assert addrs == {(GW4, 32), (GW6, 128)}
    routes = {r["dst"] for r in ip_json(node.name, "route", "show", "dev", ROUTER_DEV)}
    routes |= {r["dst"] for r in ip_json(node.name, "-6", "route", "show", "dev", ROUTER_DEV)}
    assert {POOL4, POOL6} <= routes
    assert tn.ns_exec(node.name, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    assert tn.ns_exec(node.name, "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"

    # a new configuration replaces the old addresses and routes
    node.call(plumbing.ensure_router_device, ROUTER_DEV, "10.211.0.1", None, "10.211.0.0/24")
    (link,) = ip_json(node.name, "addr", "show", "dev", ROUTER_DEV)
    assert [a["local"] for a in link["addr_info"] if a["scope"] == "global"] == ["10.211.0.1"]
    assert [r["dst"] for r in ip_json(node.name, "route", "show", "dev", ROUTER_DEV)] == [
        "10.211.0.0/24"
    ]

    assert node.call(plumbing.remove_router_device, ROUTER_DEV) is True
    assert node.call(plumbing.remove_router_device, ROUTER_DEV) is False
    assert ip_json(node.name, "link", "show", "type", "veth") == []


def test_router_device_refuses_foreign_device(node: Node) -> None:
    tn.ip(node.name, "link", "add", "cpyt_br", "type", "bridge")
    err = node.expect_error(plumbing.ensure_router_device, "cpyt_br", GW4)
    assert err["type"] == "Conflict"
    err = node.expect_error(plumbing.remove_router_device, "cpyt_br")
    assert err["type"] == "Conflict"
    assert ip_json(node.name, "link", "show", "cpyt_br")


def test_two_endpoints_plumbed_and_connected(routed_node: Node) -> None:
    node = routed_node
    ns1, ns2 = node.endpoint_ns(), node.endpoint_ns()
    l1 = attach(node, "endpoint-1", ns1, EP1)
    l2 = attach(node, "endpoint-2", ns2, EP2)
    assert l1.host_ifname == plumbing.host_ifname("endpoint-1")
    assert l1.host_ifname != l2.host_ifname

    # inside: the interface, /32 + /128, gateway routes, permanent gateway neighbours
    (inside,) = ip_json(ns1, "addr", "show", "dev", "eth0")
    assert inside["ifindex"] == l1.container_ifindex
    assert inside["address"] == l1.container_mac
    assert "UP" in inside["flags"]
    glob = {(a["local"], a["prefixlen"]) for a in inside["addr_info"] if a["scope"] == "global"}
    assert glob == {(EP1[0], 32), (EP1[1], 128)}
    assert "UP" in ip_json(ns1, "link", "show", "lo")[0]["flags"]
    r4 = {(r["dst"], r.get("gateway")) for r in ip_json(ns1, "-4", "route", "show")}
    assert r4 == {(GW4, None), ("default", GW4)}
    r6 = {(r["dst"], r.get("gateway")) for r in ip_json(ns1, "-6", "route", "show")}
    assert {(GW6, None), ("default", GW6)} <= r6
    neigh = {(n["dst"], n["lladdr"], tuple(n["state"])) for n in ip_json(ns1, "neigh", "show")}
    assert (GW4, l1.host_mac, ("PERMANENT",)) in neigh
    assert (GW6, l1.host_mac, ("PERMANENT",)) in neigh

    # on the host: the veth up, one route per address, permanent neighbours
    (host,) = ip_json(node.name, "link", "show", l1.host_ifname)
    assert host["ifindex"] == l1.host_ifindex and host["address"] == l1.host_mac
    assert "UP" in host["flags"]
    hr = {r["dst"] for r in ip_json(node.name, "route", "show", "dev", l1.host_ifname)}
    hr |= {r["dst"] for r in ip_json(node.name, "-6", "route", "show", "dev", l1.host_ifname)}
    assert {EP1[0], EP1[1]} <= hr
    hn = {(n["dst"], n["lladdr"]) for n in ip_json(node.name, "neigh", "show", "nud", "permanent")}
    assert {(EP1[0], l1.container_mac), (EP1[1], l1.container_mac)} <= hn

    # the inspection helpers agree
    state = node.call(plumbing.link_state, l1.host_ifname)
    assert state["ifindex"] == l1.host_ifindex and state["up"] and state["kind"] == "veth"
    listed = [link["ifname"] for link in node.call(plumbing.list_host_links)]
    assert listed == sorted([l1.host_ifname, l2.host_ifname])
    check = node.call(plumbing.container_link_check, f"/var/run/netns/{ns1}", "eth0")
    assert check["mac"] == l1.container_mac
    assert {(a["address"], a["prefixlen"]) for a in check["addresses"]} == glob
    assert sorted(map(str, check["routes"])) == sorted(
        map(str, plumbing.container_routes(GW4, GW6))
    )
    gateways = {n["dst"]: n for n in check["neighbours"] if n["dst"] in (GW4, GW6)}
    assert all(n["permanent"] and n["lladdr"] == l1.host_mac for n in gateways.values())
    assert len(gateways) == 2, check["neighbours"]

    # traffic: to the router and between the endpoints, both families, both ways
    for dst in (GW4, GW6, EP2[0], EP2[1]):
        assert tn.run_in_netns(ns1, tn.ping, dst, count=1) == 1, dst
    for dst in (EP1[0], EP1[1]):
        assert tn.run_in_netns(ns2, tn.ping, dst, count=1) == 1, dst
    payload = os.urandom(200_000)
    for dst in EP2:
        with tn.NetnsWorker(ns2) as server:
            server.call(tn.tcp_sink_start, dst, 5201)
            ack = tn.run_in_netns(ns1, tn.tcp_send, dst, 5201, payload)
            result = server.call(tn.tcp_sink_result, 5201)
        assert ack == b"OK %d" % len(payload)
        assert result["data"] == payload

    # delete: nothing left, and a second delete is harmless
    for link, addrs in ((l1, EP1), (l2, EP2)):
        assert node.call(plumbing.delete_endpoint_link, link.host_ifname, *addrs) is True
        assert node.call(plumbing.delete_endpoint_link, link.host_ifname, *addrs) is False
        assert node.call(plumbing.link_state, link.host_ifname) is None
    assert node.leftovers() == {"links": [], "routes": [], "neigh": []}
    for ns in (ns1, ns2):
        assert [link["ifname"] for link in ip_json(ns, "link", "show")] == ["lo"]
    assert node.call(plumbing.list_host_links) == []


@pytest.mark.parametrize("addrs", [(EP1[0], None), (None, EP1[1])], ids=["ipv4", "ipv6"])
def test_single_family_endpoint(routed_node: Node, addrs: tuple[str | None, str | None]) -> None:
    node = routed_node
    ns = node.endpoint_ns()
    link = attach(node, "single", ns, addrs)
    check = node.call(plumbing.container_link_check, f"/var/run/netns/{ns}", "eth0")
    families = {a["family"] for a in check["addresses"]}
    assert families == ({4} if addrs[0] else {6})
    gw = GW4 if addrs[0] else GW6
    assert tn.run_in_netns(ns, tn.ping, gw, count=1) == 1
    assert node.call(plumbing.delete_endpoint_link, link.host_ifname, *addrs)
    assert node.leftovers() == {"links": [], "routes": [], "neigh": []}


def test_mtu_and_ipv6_turned_off_by_runtime(routed_node: Node) -> None:
    node = routed_node
    ns = node.endpoint_ns()
    tn.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    link = node.call(
        plumbing.create_endpoint_link,
        "mtu",
        f"/var/run/netns/{ns}",
        "net0",
        EP1[0],
        EP1[1],
        GW4,
        GW6,
        mtu=1400,
    )
    assert link.mtu == 1400 and link.ifname == "net0"
    assert ip_json(ns, "link", "show", "net0")[0]["mtu"] == 1400
    assert tn.run_in_netns(ns, tn.ping, GW6, count=1) == 1
    node.call(plumbing.delete_endpoint_link, link.host_ifname, *EP1)


def test_bad_input_leaves_nothing_behind(routed_node: Node, tmp_path: Any) -> None:
    node = routed_node
    ns = node.endpoint_ns()
    path = f"/var/run/netns/{ns}"

    def refused(*args: Any, **kwargs: Any) -> dict:
        err = node.expect_error(plumbing.create_endpoint_link, *args, **kwargs)
        assert node.leftovers() == {"links": [], "routes": [], "neigh": []}, err
        return err

    err = refused("bad", "/var/run/netns/cpyt-does-not-exist", "eth0", EP1[0], None, GW4)
    assert err["type"] == "InvalidInput" and "cpyt-does-not-exist" in err["message"]
    not_ns = tmp_path / "plain-file"
    not_ns.write_text("")
    err = refused("bad", str(not_ns), "eth0", EP1[0], None, GW4)
    assert err["type"] == "InvalidInput" and "not a network namespace" in err["message"]
    err = refused("bad", "/proc/self/ns/net", "eth0", EP1[0], None, GW4)
    assert err["type"] == "InvalidInput" and "own network namespace" in err["message"]
    err = refused("bad", path, "a-name-far-too-long", EP1[0], None, GW4)
    assert err["type"] == "InvalidInput" and "too long" in err["message"]
    err = refused("bad", path, "eth 0", EP1[0], None, GW4)
    assert err["type"] == "InvalidInput"
    err = refused("bad", path, "eth0", "10.210.0.999", None, GW4)
    assert err["type"] == "InvalidInput"
    err = refused("bad", path, "eth0", EP1[0], None, None)
    assert err["type"] == "InvalidInput" and "gateway" in err["message"]

    tn.ip(ns, "link", "add", "eth0", "type", "bridge")
    err = refused("bad", path, "eth0", EP1[0], EP1[1], GW4, GW6)
    assert err["type"] == "Conflict" and err["status"] == 409 and "eth0" in err["message"]
    assert [link["ifname"] for link in ip_json(ns, "link", "show")] == ["lo", "eth0"]


def test_failure_midway_rolls_back(routed_node: Node) -> None:
    """The host route for the endpoint address exists already: the veth was made
    by then and must be removed again, and the existing route must stay."""
    node = routed_node
    ns = node.endpoint_ns()
    tn.ip(node.name, "link", "add", "cpyt_blk", "type", "bridge")
    tn.ip(node.name, "link", "set", "cpyt_blk", "up")
    tn.ip(node.name, "route", "add", f"{EP1[0]}/32", "dev", "cpyt_blk")
    err = node.expect_error(
        plumbing.create_endpoint_link, "mid", f"/var/run/netns/{ns}", "eth0", *EP1, GW4, GW6
    )
    assert err["type"] == "Conflict" and EP1[0] in err["message"]
    assert node.leftovers()["links"] == []
    assert [link["ifname"] for link in ip_json(ns, "link", "show")] == ["lo"]
    assert [r["dst"] for r in ip_json(node.name, "route", "show", "dev", "cpyt_blk")] == [EP1[0]]


def test_second_create_for_same_endpoint_conflicts(routed_node: Node) -> None:
    node = routed_node
    ns, other = node.endpoint_ns(), node.endpoint_ns()
    link = attach(node, "dup", ns, EP1)
    err = node.expect_error(
        plumbing.create_endpoint_link, "dup", f"/var/run/netns/{other}", "eth0", *EP2, GW4, GW6
    )
    assert err["type"] == "Conflict" and link.host_ifname in err["message"]
    assert [link["ifname"] for link in ip_json(other, "link", "show")] == ["lo"]
    assert node.call(plumbing.delete_endpoint_link, link.host_ifname, *EP1)


def test_container_gone_takes_the_veth(routed_node: Node) -> None:
    node = routed_node
    ns = node.endpoint_ns()
    path = f"/var/run/netns/{ns}"
    link = attach(node, "gone", ns, EP1)
    assert node.call(plumbing.netns_alive, path) is True
    tn.delete_netns(ns)
    assert node.call(plumbing.netns_alive, path) is False
    assert node.call(plumbing.netns_alive, "/proc/999999999/ns/net") is False
    # the kernel removes the pair with the namespace (asynchronously)
    for _ in range(100):
        if node.call(plumbing.link_state, link.host_ifname) is None:
            break
        time.sleep(0.02)
    assert node.call(plumbing.delete_endpoint_link, link.host_ifname, *EP1) is False
    assert node.leftovers() == {"links": [], "routes": [], "neigh": []}
    err = node.expect_error(plumbing.container_link_check, path, "eth0")
    assert err["type"] == "InvalidInput"


def test_delete_refuses_what_is_not_an_endpoint(routed_node: Node) -> None:
    node = routed_node
    tn.ip(node.name, "link", "add", "cpyt_br", "type", "bridge")
    for name in (ROUTER_DEV, "cpyt_host_net", "cpyt_br", "lo"):
        err = node.expect_error(plumbing.delete_endpoint_link, name)
        assert err["type"] == "InvalidInput", err
    assert len(ip_json(node.name, "link", "show")) == 4
