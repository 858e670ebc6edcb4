"""connect / disconnect / rm leave nothing behind; plugin and agent restarts keep traffic."""

from __future__ import annotations

import os
import tempfile

import pytest
from docker_e2e import (
    PrivateDockerd,
    agent_router,
    docker,
    leak_snapshot,
    restart_agent,
    start_root_agent,
)

pytestmark = pytest.mark.integration


def test_connect_disconnect_rm_leave_nothing(env):
    before = leak_snapshot(env)
    net = env.network("v6", "--ipv6")
    # Start on Docker's default bridge, then connect to and disconnect from cilium-py.
    ctr = env.run("bridge", labels={"app": "web"},
                  cmd=("httpd", "-f", "-p", "80", "-h", "/www"))
    docker("network", "connect", net, ctr)
    ep = env.endpoint_id(ctr, net)
    assert env.wait_identity(ep)["labels"] == ["container:app=web"]  # via the connect event
    client = env.run(net, labels={"app": "client"})
    ip, ip6 = env.addresses(ctr, net)
    assert "hello" in env.http(client, ip) and "hello" in env.http(client, ip6)
    assert len(leak_snapshot(env)["endpoints"]) == len(before["endpoints"]) + 2

    docker("network", "disconnect", net, ctr)
    assert ep not in leak_snapshot(env)["endpoints"]
    docker("network", "connect", net, ctr)  # and back again
    assert "hello" in env.http(client, env.addresses(ctr, net)[0])
    docker("rm", "-f", ctr, client)
    docker("network", "rm", net)
    assert leak_snapshot(env) == before


def test_second_cilium_network_is_refused_without_leaks(env):
    net_a = env.network("a")
    net_b = env.network("b")
    ctr = env.web(net_a, {"app": "web"}, "-p", "18081:80")
    before = leak_snapshot(env)
    res = docker("network", "connect", net_b, ctr, check=False)
    assert res.returncode != 0
    assert "already on a cilium-py network" in res.stderr
    assert leak_snapshot(env) == before
    docker("rm", "-f", ctr)
    after = leak_snapshot(env)
    assert after["port-rules"] == 0
    assert len(after["endpoints"]) == len(before["endpoints"]) - 1


def test_stop_and_start_again(env):
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    client = env.run(net, labels={"app": "client"})
    docker("stop", "-t", "1", web)
    docker("start", web)
    ip, _ = env.addresses(web, net)
    assert "hello from cilium-py" in env.http(client, ip)


def test_plugin_restart_keeps_traffic_and_state(env):
    net = env.network("v4")
    web = env.web(net, {"app": "web"}, "-p", "18082:80")
    client = env.run(net, labels={"app": "client"})
    ip, _ = env.addresses(web, net)
    assert "hello" in env.http(client, ip)

    env.plugin.stop()
    try:
        # The datapath is in the kernel and the agent: traffic does not need the plugin.
        assert "hello" in env.http(client, ip)
    finally:
        env.plugin.start()
    assert "hello" in env.http(client, ip)
    # The restarted plugin serves new containers and tears down old ones.
    late = env.run(net, labels={"app": "client"})
    assert "hello" in env.http(late, ip)
    before_rm = leak_snapshot(env)
    docker("rm", "-f", web)
    after = leak_snapshot(env)
    assert len(after["endpoints"]) == len(before_rm["endpoints"]) - 1
    assert after["port-rules"] == 0


def test_agent_restart_keeps_traffic(env, docker_env):
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    client = env.run(net, labels={"app": "client"})
    ip, _ = env.addresses(web, net)
    assert "hello" in env.http(client, ip)

    agent = docker_env.agent
    agent.stop()
    try:
        assert "hello" in env.http(client, ip), "traffic stopped while the agent was down"
    finally:
        docker_env.agent = start_root_agent(
            os.path.dirname(agent.state_dir), agent.bpf_root, agent_router(agent),
            *agent.extra_args)
    assert "hello" in env.http(client, ip)
    assert env.endpoint(env.endpoint_id(web, net)) is not None
    late = env.run(net, labels={"app": "client"})
    assert "hello" in env.http(late, ip)



def test_labels_arrive_when_dockerd_starts_after_the_agent_and_restarts(env, docker_env):
    """Issue 11 item 4: the agent's label watcher waits for dockerd, and re-syncs when
    dockerd comes back. The dockerd here is the test's own (see PrivateDockerd), so
    stopping it touches no other; only the agent watches it."""
    dockerd = PrivateDockerd(tempfile.mkdtemp(prefix="cpyt-dockerd-"),
                             bridge=f"cpytb{env.prefix[5:]}")
    restart_agent(docker_env, "--docker-socket", dockerd.socket)  # before dockerd exists
    try:
        dockerd.start()
        dockerd.load(env.image)
        net = env.name("late")
        dockerd.docker("network", "create", "-d", env.driver, "--ipam-driver", env.driver, net)
        # --restart always: it comes back with dockerd, before the watcher reconnects
        early = dockerd.docker("run", "-d", "--restart", "always", "--stop-timeout", "1",
                               "--network", net, "-l", "app=early", env.image,
                               "sleep", "3600").stdout.strip()
        ep = env.wait_identity(dockerd.endpoint_id(early, net))
        assert ep["labels"] == ["container:app=early"]
        dockerd.stop()
        dockerd.start()
        ep = env.wait_identity(dockerd.endpoint_id(early, net))
        assert ep["labels"] == ["container:app=early"]
        late = dockerd.docker("run", "-d", "--stop-timeout", "1", "--network", net,
                              "-l", "app=late", env.image, "sleep", "3600").stdout.strip()
        assert env.wait_identity(dockerd.endpoint_id(late, net))["labels"] == [
            "container:app=late"]
    finally:
        dockerd.remove()
        restart_agent(docker_env)
