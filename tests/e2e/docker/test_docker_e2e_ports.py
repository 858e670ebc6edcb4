"""Published ports reach a container from an outside namespace through the host address."""

from __future__ import annotations

import os
import socket

import pytest
from docker_e2e import Plugin, leak_snapshot, run

pytestmark = pytest.mark.integration


def _get(ns: str, address: str, port: int) -> str:
    script = f'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | busybox nc -w 3 {address} {port}'
    return run("ip", "netns", "exec", ns, "sh", "-c", script, check=False, timeout=30).stdout


def _published_ports(env, eid: str) -> list[int]:
    text = run("iptables", "-t", "nat", "-S", env.chains.nat).stdout
    return [int(line.split("--dport ")[1].split()[0])
            for line in text.splitlines() if env.chains.comment_prefix + eid in line]


def test_published_port_from_outside(env, outside):
    ns, host = outside
    net = env.network("v4")
    env.web(net, {"app": "web"}, "-p", "18083:80")
    assert "hello from cilium-py" in _get(ns, host, 18083)


def test_any_host_port(env, outside):
    ns, host = outside
    net = env.network("v6", "--ipv6")
    web = env.web(net, {"app": "web"}, "-p", "80")
    ports = _published_ports(env, env.endpoint_id(web, net))
    assert len(ports) == 1 and ports[0] >= 49153
    assert "hello from cilium-py" in _get(ns, host, ports[0])


def test_rm_unpublishes(env, outside):
    ns, host = outside
    net = env.network("v4")
    web = env.web(net, {"app": "web"}, "-p", "18084:80")
    assert "hello" in _get(ns, host, 18084)
    run("docker", "rm", "-f", web)
    assert _get(ns, host, 18084) == ""
    assert leak_snapshot(env)["port-rules"] == 0


def test_port_taken_twice_is_refused(env):
    net = env.network("v4")
    env.web(net, {"app": "web"}, "-p", "18085:80")
    res = run("docker", "run", "-d", "--name", env.name("dup"), "--network", net,
              "-p", "18085:80", env.image, "sleep", "60", check=False)
    assert res.returncode != 0
    assert "18085/tcp is already published" in res.stderr


def _run_published(env, net: str, publish: str):
    return run("docker", "run", "-d", "--name", env.name("pub"), "--network", net,
               "-p", publish, env.image, "httpd", "-f", "-p", "80", "-h", "/www", check=False)


def test_a_port_a_host_process_listens_on_is_refused(env):
    """Issue 11 item 6: as with Docker's bridge, whose proxy cannot bind it."""
    net = env.network("v4")
    before = leak_snapshot(env)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 18088))
        listener.listen()
        res = _run_published(env, net, "18088:80")
    assert res.returncode != 0
    assert "host port 18088/tcp is in use on this host" in res.stderr
    assert leak_snapshot(env) == before


def test_a_published_port_stays_taken_for_host_processes(env):
    """The other way round: a host process that starts after the port was published is
    told it is taken (as with Docker's proxy), not left to lose its traffic to DNAT."""
    net = env.network("v4")
    web = env.web(net, {"app": "web"}, "-p", "18092:80")

    def bind() -> None:
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("0.0.0.0", 18092))

    with pytest.raises(OSError, match="Address already in use"):
        bind()
    run("docker", "rm", "-f", web)
    bind()


def test_publishing_on_loopback_is_refused_clearly(env):
    net = env.network("v4")
    before = leak_snapshot(env)
    res = _run_published(env, net, "127.0.0.1:18089:80")
    assert res.returncode != 0
    assert "cannot publish on the loopback address 127.0.0.1" in res.stderr
    assert leak_snapshot(env) == before


def test_publishing_on_all_ipv4_addresses(env, outside):
    ns, host = outside
    net = env.network("v4")
    assert _run_published(env, net, "0.0.0.0:18091:80").returncode == 0
    assert "hello from cilium-py" in _get(ns, host, 18091)


def test_a_second_plugin_leaves_the_first_ones_ports_alone(env, outside, agent, workdir):
    """Issue 11 item 9: another plugin instance on the host (here with an agent in a
    node namespace that knows none of the session's endpoints) reconciles only its own
    rules at start: the session plugin's published port keeps answering."""
    ns, host = outside
    net = env.network("v4")
    env.web(net, {"app": "web"}, "-p", "18087:80")
    assert "hello from cilium-py" in _get(ns, host, 18087)
    name = f"{env.prefix}-2nd"
    second = Plugin(name=name, socket=f"/run/docker/plugins/{name}.sock",
                    agent_socket=agent.socket, state_file=os.path.join(workdir, "driver.json"),
                    log_path=os.path.join(workdir, "plugin.log"), watch_labels=False)
    try:
        second.start()  # answers only once its start-up reconciliation is done
        assert "hello from cilium-py" in _get(ns, host, 18087)
    finally:
        second.stop()
        second.remove_chains()
        if os.path.exists(second.socket):
            os.unlink(second.socket)
