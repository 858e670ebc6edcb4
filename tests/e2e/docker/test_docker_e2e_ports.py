"""Published ports reach a container from an outside namespace through the host address."""

from __future__ import annotations

import pytest
from docker_e2e import leak_snapshot, run

pytestmark = pytest.mark.integration


def _get(ns: str, address: str, port: int) -> str:
    script = f'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | busybox nc -w 3 {address} {port}'
    return run("ip", "netns", "exec", ns, "sh", "-c", script, check=False, timeout=30).stdout


def _published_ports(eid: str) -> list[int]:
    text = run("iptables", "-t", "nat", "-S", "CILIUM_PY_DOCKER_DNAT").stdout
    return [int(line.split("--dport ")[1].split()[0])
            for line in text.splitlines() if f"cilium-py-docker:{eid}" in line]


def test_published_port_from_outside(env, outside):
    ns, host = outside
    net = env.network("v4")
    env.web(net, {"app": "web"}, "-p", "18083:80")
    assert "hello from cilium-py" in _get(ns, host, 18083)


def test_any_host_port(env, outside):
    ns, host = outside
    net = env.network("v6", "--ipv6")
    web = env.web(net, {"app": "web"}, "-p", "80")
    ports = _published_ports(env.endpoint_id(web, net))
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
