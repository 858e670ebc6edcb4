"""Label policy on Docker containers (Cilium's policy JSON through PUT /v1/policy)."""

from __future__ import annotations

import time

import pytest
from docker_e2e import docker, run

pytestmark = pytest.mark.integration

RULE_LABEL = {"key": "cpyt-docker-e2e", "value": "policy", "source": "unspec"}

WEB_FROM_CLIENT = [{
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{
        "fromEndpoints": [{"matchLabels": {"app": "client"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
    }],
    "labels": [RULE_LABEL],
}]

WEB_FROM_WORLD = [{
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"fromEntities": ["world"],
                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    "labels": [RULE_LABEL],
}]

@pytest.fixture
def policy(env):
    api = env.api()

    def put(rules: list) -> int:
        revision = api.call("PUT", "/v1/policy", body=rules)["revision"]
        api.call("GET", f"/v1/policy/wait/{revision}")
        return revision

    try:
        yield put
    finally:
        api.request("DELETE", "/v1/policy",
                    params={"labels": f"unspec:{RULE_LABEL['key']}={RULE_LABEL['value']}"})


def _web_and_clients(env):
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    good = env.run(net, labels={"app": "client"})
    bad = env.run(net, labels={"app": "other"})
    for ctr in (web, good, bad):
        env.wait_identity(env.endpoint_id(ctr, net))
    return net, web, good, bad


def test_policy_resolves_for_docker_labels(env, policy):
    policy(WEB_FROM_CLIENT)
    net, web, good, bad = _web_and_clients(env)
    resolved = env.api().get(f"/v1/endpoint/{env.endpoint_id(web, net)}/policy")
    assert resolved["ingress"]["enforcing"] is True
    good_id = env.endpoint(env.endpoint_id(good, net))["identity"]
    bad_id = env.endpoint(env.endpoint_id(bad, net))["identity"]
    allowed = {e["identity"] for e in resolved["ingress"]["entries"] if e["verdict"] == "allow"}
    assert good_id in allowed and bad_id not in allowed


def test_policy_allows_one_client_and_denies_another(env, policy):
    policy(WEB_FROM_CLIENT)
    net, web, good, bad = _web_and_clients(env)
    ip, _ = env.addresses(web, net)
    assert "hello from cilium-py" in env.http(good, ip)
    assert env.http(bad, ip, wait=2) == ""


def test_new_container_connects_at_once(env, policy):
    """Started with labels and connecting immediately: allowed within a few seconds,
    denied never (it starts with the init identity, which may reach nothing)."""
    policy(WEB_FROM_CLIENT)
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    ip, _ = env.addresses(web, net)
    def loop(tries: int) -> tuple[str, str]:
        return ("sh", "-c", f'i=0; while [ $i -lt {tries} ]; do i=$((i+1)); '
                f'if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 1 {ip} 80 | grep -q hello; '
                'then echo "ok $i"; exit 0; fi; sleep 0.1; done; echo never; exit 1')

    start = time.monotonic()
    good = env.run(net, labels={"app": "client"}, cmd=loop(40))
    # Every denied try waits out nc's 1 s: ten of them (11 s) show it is never let in,
    # from its first packet (init identity) to well after its labels are in force.
    bad = env.run(net, labels={"app": "other"}, cmd=loop(10))
    assert int(run("docker", "wait", good, timeout=120).stdout.strip()) == 0
    assert time.monotonic() - start < 30
    assert int(run("docker", "wait", bad, timeout=120).stdout.strip()) == 1


def test_published_port_obeys_policy(env, policy, outside):
    ns, host = outside
    policy(WEB_FROM_CLIENT)
    net = env.network("v4")
    web = env.web(net, {"app": "web"}, "-p", "18086:80")
    env.wait_identity(env.endpoint_id(web, net))
    script = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | busybox nc -w 2 {host} 18086'
    outside_get = ("ip", "netns", "exec", ns, "sh", "-c", script)
    assert run(*outside_get, check=False).stdout == ""  # world is not app=client
    policy(WEB_FROM_WORLD)
    assert "hello" in run(*outside_get, check=False).stdout


def test_containers_from_dockers_bridge_get_no_host_privilege(env, policy):
    """Issue 11 item 5: a container on Docker's default bridge that is also connected to
    a cilium-py network reaches the pool through its cilium-py interface, with its own
    identity; one only on the bridge arrives masqueraded to a node address and is world,
    not the always-allowed host."""
    policy(WEB_FROM_CLIENT)
    net = env.network("v4")
    web = env.web(net, {"app": "web"})
    ip, _ = env.addresses(web, net)
    both = {}
    for app in ("client", "other"):
        ctr = env.run("bridge", labels={"app": app})  # the bridge keeps the default route
        docker("network", "connect", net, ctr)
        env.wait_identity(env.endpoint_id(ctr, net))
        both[app] = ctr
    bridge_only = env.run("bridge", labels={"app": "client"})
    routes = env.exec(both["client"], "ip", "route").stdout
    assert "default via 172." in routes and "10.201.0.0/16 via 10.201.0.1" in routes
    assert "hello from cilium-py" in env.http(both["client"], ip)
    assert env.http(both["other"], ip, wait=2) == ""
    assert env.http(bridge_only, ip, wait=2) == ""
