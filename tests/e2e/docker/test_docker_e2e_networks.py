"""Networks and connectivity through a real dockerd: IPv4, IPv6, labels -> identities."""

from __future__ import annotations

import re
import time

import pytest
from docker_e2e import INIT_IDENTITY, POOL4, POOL6, docker

pytestmark = pytest.mark.integration


def test_v4_network_uses_the_agent_pool(env):
    net = env.network("v4")
    cfg = docker("network", "inspect", "-f", "{{json .IPAM.Config}}", net).stdout
    assert POOL4 in cfg and "10.201.0.1" in cfg


def test_v6_network(env):
    net = env.network("v6", "--ipv6")
    cfg = docker("network", "inspect", "-f", "{{json .IPAM.Config}} {{.EnableIPv6}}", net).stdout
    assert POOL6 in cfg and cfg.strip().endswith("true")


def test_foreign_subnet_is_refused_with_a_clear_error(env):
    name = env.name("bad")
    res = docker("network", "create", "-d", env.driver, "--ipam-driver", env.driver,
                 "--subnet", "10.99.0.0/16", name, check=False)
    assert res.returncode != 0
    assert "10.99.0.0/16 is not a cilium-py pool" in res.stderr
    assert POOL4 in res.stderr


def test_dockers_own_ipam_is_refused(env):
    res = docker("network", "create", "-d", env.driver, env.name("noipam"), check=False)
    assert res.returncode != 0
    assert "--ipam-driver" in res.stderr


def test_two_labelled_containers_reach_each_other_v4(env):
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    client = env.run(net, labels={"app": "client"})
    web_ip, _ = env.addresses(web, net)
    assert web_ip.startswith("10.201.")
    assert env.ping(client, web_ip)
    assert "hello from cilium-py" in env.http(client, web_ip)


def test_two_containers_reach_each_other_v6(env):
    net = env.network("v6", "--ipv6")
    web = env.web(net, {"app": "web"})
    client = env.run(net, labels={"app": "client"})
    web_ip, web_ip6 = env.addresses(web, net)
    assert web_ip6.startswith("fd10:201:")
    assert env.ping(client, web_ip6)
    assert "hello from cilium-py" in env.http(client, web_ip6)
    assert "hello from cilium-py" in env.http(client, web_ip)


def test_container_interface_is_what_docker_configured(env):
    net = env.network("v4")
    ctr = env.run(net)
    ip, _ = env.addresses(ctr, net)
    out = env.exec(ctr, "ip", "addr", "show", "eth0").stdout
    assert f"inet {ip}/32" in out
    routes = env.exec(ctr, "ip", "route").stdout
    assert "default via 10.201.0.1 dev eth0" in routes
    # The agent's MAC: its datapath checks the source MAC of every frame.
    ep = env.endpoint(env.endpoint_id(ctr, net))
    assert ep is not None and ep["mac"] in out


def test_labels_become_the_endpoint_identity(env):
    net = env.network("v4")
    web = env.run(net, labels={"app": "web", "tier": "front"})
    ep_id = env.endpoint_id(web, net)
    ep = env.wait_identity(ep_id)
    assert sorted(ep["labels"]) == ["container:app=web", "container:tier=front"]
    assert ep["identity"] >= 256
    # Issue 11 item 10: libnetwork never names the container; the watcher does.
    container = env.inspect(web)["Id"]
    for _ in range(50):
        ep = env.endpoint(ep_id)
        if ep["container-id"]:
            break
        time.sleep(0.05)
    assert (ep["container-id"], ep["container-name"]) == (container, web)
    shown = env.agent.cli("endpoint", "get", ep_id).stdout
    assert re.search(rf"^container-name: +{web}$", shown, re.M), shown
    assert re.search(r"^container-interface: +tmp", shown, re.M), shown


def test_unlabelled_container_leaves_the_init_identity(env):
    # Labels known, none: the empty label set gets an identity of its own, so an
    # unlabelled container is not stuck in the fail-closed init state.
    net = env.network("v4")
    ctr = env.run(net)
    ep = env.wait_identity(env.endpoint_id(ctr, net))
    assert ep["identity"] != INIT_IDENTITY and ep["identity"] >= 256
    assert ep["labels"] == []


def test_fixed_ip_and_its_release(env):
    net = env.network("v4", "--subnet", POOL4)
    ctr = env.run(net, "--ip", "10.201.7.7")
    assert env.addresses(ctr, net)[0] == "10.201.7.7"
    assert env.api().get("/v1/ipam")["allocations"].get("10.201.7.7")
    docker("rm", "-f", ctr)
    assert "10.201.7.7" not in env.api().get("/v1/ipam")["allocations"]


def test_an_internal_network_keeps_its_containers_in(env, outside):
    """Issue 11 item 7: --internal reaches the pool (and the host), nothing beyond, even
    for a container that gives itself a default route."""
    ns, _ = outside
    net = env.network("int", "--internal")
    web = env.web(net, {"app": "web"})
    inner = env.run(net, "--cap-add", "NET_ADMIN")
    ip, _ = env.addresses(web, net)
    assert "hello from cilium-py" in env.http(inner, ip)
    assert "default" not in env.exec(inner, "ip", "route").stdout
    env.exec(inner, "ip", "route", "add", "default", "via", "10.201.0.1")
    assert not env.ping(inner, "198.51.100.2", count=1)
    control = env.run(env.network("v4"))
    assert env.ping(control, "198.51.100.2", count=1)


def test_the_first_ipv6_packet_of_a_new_container_goes_at_once(env):
    """Issue 11 item 8: a Docker endpoint has no static neighbour entry for the gateway
    (dockerd configures the interface), and the host's proxy NDP used to answer after
    a random delay of up to 0.8 s. The first packet of a new container, then three
    after flushing its neighbour cache, must each go within a few milliseconds. They go
    to the gateway, the host: before its labels arrive a container has the init
    identity, which may reach nothing else."""
    net = env.network("v6", "--ipv6")
    gateway = "fd10:201::1"
    script = (f"ping -c1 -W3 {gateway}; for i in 1 2 3; do ip -6 neigh flush dev eth0; "
              f"ping -c1 -W3 {gateway}; done")
    out = docker("run", "--rm", "--name", env.name("first"), "--cap-add", "NET_ADMIN",
                 "--network", net, env.image, "sh", "-c", script).stdout
    rtts = [float(ms) for ms in re.findall(r"time=([\d.]+) ms", out)]
    assert len(rtts) == 4, out
    assert max(rtts) < 100, rtts
