"""Identity-based L3/L4 policy through the real agent (issue 4).

One agent in a node namespace with five endpoints and an "outside" namespace on the
node's uplink is shared by the module; each test imports its rules, waits for the
revision, sends packets that must pass and packets that must not, then deletes them.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import RunningAgent, start_agent, unique
from tests.support import netns as nsh

TCP_PORTS = (80, 81, 8080, 8081)
UDP_PORT = 53

# Traffic comes from tests/support/netns.py: serve_start answers TCP on TCP_PORTS and
# echoes UDP on 53, v4 and v6; tcp_ok/udp_ok say whether a connection worked.


def serve_all() -> None:
    nsh.serve_start(TCP_PORTS, (UDP_PORT,))


def tcp_ok(dst: str, port: int) -> bool:
    return nsh.tcp_ok(dst, port, 1.0)


def udp_ok(dst: str, port: int = UDP_PORT) -> bool:
    return nsh.udp_ok(dst, port, 1.0)


def tcp_ok_from(src: str, dst: str, port: int) -> bool:
    return nsh.tcp_ok(dst, port, 1.0, src)


# --------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------

ENDPOINTS = {
    "server": ["container:app=server", "container:env=prod"],
    "client": ["container:app=client", "container:env=prod"],
    "devclient": ["container:app=client", "container:env=dev"],
    "other": ["container:app=other", "container:env=prod"],
}


class Lab:
    def __init__(self, agent: RunningAgent, eps: dict, workers: dict, outside: dict) -> None:
        self.agent = agent
        self.eps = eps
        self.workers = workers
        self.outside = outside

    def addr(self, name: str, fam: str = "ipv4") -> str:
        return self.eps[name]["addressing"][fam]

    def tcp(self, src: str, dst: str, port: int, fam: str = "ipv4") -> bool:
        return self.workers[src].call(tcp_ok, self.addr(dst, fam), port)

    def udp(self, src: str, dst: str, fam: str = "ipv4") -> bool:
        return self.workers[src].call(udp_ok, self.addr(dst, fam))

    def ping(self, src: str, dst: str, fam: str = "ipv4") -> bool:
        return self.workers[src].call(nsh.ping, self.addr(dst, fam), 1, 1.0) == 1

    def apply(self, rules: list) -> int:
        resp = self.agent.api("PUT", "/v1/policy", rules)
        assert resp.status_code == 200, resp.text
        rev = resp.json()["revision"]
        wait = self.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=20")
        assert wait.status_code == 200, wait.text
        return rev

    def clear(self) -> None:
        if self.agent.api("GET", "/v1/policy").json()["policy"]:
            resp = self.agent.api("DELETE", "/v1/policy")
            assert resp.status_code == 200
            self.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=20")


@pytest.fixture(scope="module")
def lab():
    nsh_names: list[str] = []

    def make(prefix: str) -> str:
        n = unique(prefix)
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        nsh_names.append(n)
        return n

    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix="cpyt-")
    bpf_root = f"/sys/fs/bpf/{unique()}"
    workers: dict[str, nsh.NetnsWorker] = {}
    agent = None
    try:
        node = make("cpyt-node")
        agent = start_agent(node, work, bpf_root, "--kafka-proxy", "false")
        eps = {}
        for name, labels in ENDPOINTS.items():
            ns = make("cpyt-ep")
            resp = agent.api("PUT", f"/v1/endpoint/{name}",
                             {"netns": f"/var/run/netns/{ns}", "labels": labels})
            assert resp.status_code == 201, resp.text
            eps[name] = resp.json()
            workers[name] = nsh.NetnsWorker(ns)
            workers[name].call(serve_all)
        outside_ns = make("cpyt-out")
        nsh.add_veth(node, "cpyup0", outside_ns, "eth0")
        nsh.ip(node, "addr", "add", "198.51.100.1/24", "dev", "cpyup0")
        nsh.ip(node, "link", "set", "cpyup0", "up")
        for a in ("198.51.100.2/24", "198.51.100.200/24"):
            nsh.ip(outside_ns, "addr", "add", a, "dev", "eth0")
        nsh.ip(outside_ns, "link", "set", "eth0", "up")
        nsh.ip(outside_ns, "route", "add", "10.200.0.0/16", "via", "198.51.100.1")
        workers["outside"] = nsh.NetnsWorker(outside_ns)
        workers["outside"].call(serve_all)
        yield Lab(agent, eps, workers, {"ns": outside_ns, "node": node})
    finally:
        for w in workers.values():
            w.close()
        if agent is not None:
            agent.stop()
        for n in nsh_names:
            subprocess.run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


@pytest.fixture
def clean(lab):
    lab.clear()
    yield lab
    lab.clear()


def server_rule(ingress: list, **extra) -> dict:
    rule = {"endpointSelector": {"matchLabels": {"app": "server"}}, "ingress": ingress,
            "labels": [{"key": "test", "value": "policy", "source": "unspec"}]}
    rule.update(extra)
    return rule


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_no_policy_allows_everything(clean) -> None:
    for fam in ("ipv4", "ipv6"):
        assert clean.tcp("other", "server", 80, fam)
        assert clean.ping("other", "server", fam)


def test_label_l3(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
    for fam in ("ipv4", "ipv6"):
        assert clean.tcp("client", "server", 81, fam)
        assert clean.ping("client", "server", fam)
        assert clean.udp("client", "server", fam)
        assert not clean.tcp("other", "server", 81, fam)
        assert not clean.ping("other", "server", fam)
        assert not clean.udp("other", "server", fam)


def test_l3_and_l4(clean) -> None:
    clean.apply([server_rule([{
        "fromEndpoints": [{"matchLabels": {"app": "client"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}])])
    for fam in ("ipv4", "ipv6"):
        assert clean.tcp("client", "server", 80, fam)
        assert not clean.tcp("client", "server", 81, fam)
        assert not clean.udp("client", "server", fam)
        assert not clean.ping("client", "server", fam), "ICMP passes only in an allowed flow"
        assert not clean.tcp("other", "server", 80, fam)


def test_l4_only_and_udp(clean) -> None:
    clean.apply([server_rule([{"toPorts": [{"ports": [
        {"port": "8080", "protocol": "tcp"}, {"port": "53", "protocol": "UDP"}]}]}])])
    for fam in ("ipv4", "ipv6"):
        assert clean.tcp("other", "server", 8080, fam)
        assert clean.udp("other", "server", fam)
        assert not clean.tcp("other", "server", 8081, fam)


def test_from_requires_narrows(clean) -> None:
    clean.apply([
        server_rule([{"fromRequires": [{"matchLabels": {"env": "prod"}}]}]),
        server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]),
    ])
    assert clean.tcp("client", "server", 80)
    assert not clean.tcp("devclient", "server", 80), "env=dev fails the requirement"
    assert not clean.tcp("other", "server", 80), "not allowed by any rule"


def test_replies_of_established_connections_pass(clean) -> None:
    # client denies all ingress; its own connections to the server still get replies.
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "client", "env": "prod"}},
                  "ingress": [{}]}])
    assert clean.tcp("client", "server", 80)
    assert clean.udp("client", "server")
    assert clean.ping("client", "server")
    assert not clean.tcp("server", "client", 80)
    assert not clean.ping("server", "client")


def test_egress_default_deny_and_allow(clean) -> None:
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "other"}}, "egress": [{}]}])
    assert not clean.tcp("other", "server", 80)
    assert not clean.ping("other", "server", "ipv6")
    assert clean.tcp("client", "server", 80)
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "other"}},
                  "egress": [{"toEndpoints": [{"matchLabels": {"app": "server"}}],
                              "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}])
    assert clean.tcp("other", "server", 80)
    assert not clean.tcp("other", "server", 81)
    assert not clean.tcp("other", "client", 80)


def test_from_cidr_and_cidr_set_except(clean) -> None:
    out = clean.workers["outside"]
    srv = clean.addr("server")
    assert out.call(tcp_ok, srv, 80)
    clean.apply([server_rule([{"fromCIDRSet": [
        {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}]}])])
    assert out.call(tcp_ok_from, "198.51.100.2", srv, 80)
    assert not out.call(tcp_ok_from, "198.51.100.200", srv, 80)
    clean.clear()
    clean.apply([server_rule([{"fromCIDR": ["198.51.100.200/32"]}])])
    assert out.call(tcp_ok_from, "198.51.100.200", srv, 80)
    assert not out.call(tcp_ok_from, "198.51.100.2", srv, 80)


def test_to_entities_world(clean) -> None:
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "other"}},
                  "egress": [{"toEntities": ["world"]}]}])
    assert clean.workers["other"].call(tcp_ok, "198.51.100.2", 80)
    assert not clean.tcp("other", "server", 80), "a local endpoint is not world"


def test_host_reaches_endpoints_unless_flag(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
    node = clean.outside["node"]
    with nsh.NetnsWorker(node) as host:
        assert host.call(tcp_ok, clean.addr("server"), 80), "host may always reach endpoints"
        assert host.call(nsh.ping, clean.addr("server", "ipv6"), 1, 1.0) == 1


def test_label_change_flips_verdict_and_delete_restores(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
    assert not clean.tcp("other", "server", 80)
    resp = clean.agent.api("PATCH", "/v1/endpoint/other/labels",
                           {"add": ["container:app=client"], "delete": ["container:app=other"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["identity"] != clean.eps["other"]["identity"]
    try:
        assert _eventually(lambda: clean.tcp("other", "server", 80))
    finally:
        clean.agent.api("PATCH", "/v1/endpoint/other/labels",
                        {"labels": ENDPOINTS["other"]})
    assert _eventually(lambda: not clean.tcp("other", "server", 80))
    resp = clean.agent.api("DELETE", "/v1/policy?labels=unspec:test=policy")
    assert resp.status_code == 200 and resp.json()["deleted"] == 1
    clean.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}")
    assert clean.tcp("other", "server", 80)


def _eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_invalid_documents_rejected_whole(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
    before = clean.agent.api("GET", "/v1/policy").json()
    bad_docs = {
        "two L3 selectors": [server_rule([{"fromEndpoints": [{}], "fromCIDR": ["10.0.0.0/8"]}])],
        "toPorts with CIDR": [server_rule([{"fromCIDR": ["10.0.0.0/8"], "toPorts": [
            {"ports": [{"port": "80"}]}]}])],
        "port out of range": [server_rule([{"toPorts": [{"ports": [{"port": "70000"}]}]}])],
        "bad protocol": [server_rule([{"toPorts": [{"ports": [{"port": "80",
                                                              "protocol": "SCTP"}]}]}])],
        "no endpointSelector": [{"ingress": [{}]}],
        "bad cidr": [server_rule([{"fromCIDR": ["300.1.2.3/8"]}])],
    }
    for what, doc in bad_docs.items():
        # A valid rule first: nothing of a bad document may be applied.
        resp = clean.agent.api("PUT", "/v1/policy", [server_rule([{}]), *doc])
        assert resp.status_code == 400, what
        err = resp.json()
        assert err["fields"], what
        assert any(key.startswith("[1]") for key in err["fields"]), (what, err)
    resp = clean.agent.api("PUT", "/v1/policy", {"not": "an array"})
    assert resp.status_code == 400
    assert clean.agent.api("GET", "/v1/policy").json() == before
    assert not clean.tcp("other", "server", 80)


def test_trace_both_directions(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                              "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}])])
    allowed = clean.agent.cli("policy", "trace", "-s", "container:app=client",
                              "-d", "container:app=server", "--dport", "80/TCP")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.rstrip().endswith("ALLOWED")
    assert "ingress" in allowed.stdout.lower() and "egress" in allowed.stdout.lower()
    denied = clean.agent.cli("policy", "trace", "-s", "container:app=other",
                             "-d", "container:app=server", "--dport", "80/TCP")
    assert denied.stdout.rstrip().endswith("DENIED")
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [{}]}])
    egress = clean.agent.cli("policy", "trace", "-s", "container:app=client",
                             "-d", "container:app=server", "--dport", "80/TCP", "-o", "json")
    doc = json.loads(egress.stdout)
    assert doc["verdict"] == "DENIED"


def test_monitor_sees_drop_event(clean) -> None:
    clean.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
    env_sock = clean.agent.socket
    proc = subprocess.Popen(
        [str(__import__("tests.conftest", fromlist=["CLI"]).CLI), "--socket", env_sock,
         "monitor", "--type", "drop", "-o", "json", "-n", "1"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            clean.tcp("other", "server", 81)
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    event = json.loads(out.strip().splitlines()[-1])
    assert event["type"] == "drop"
    assert event["reason_name"] == "policy-denied"
    assert event["src_identity"] == clean.eps["other"]["identity"]
    assert event["dst_identity"] == clean.eps["server"]["identity"]


def test_enforcement_always_and_never(lab) -> None:
    lab.clear()
    # Mode is also per endpoint: recreate 'other' with enforcement always.
    assert lab.tcp("client", "other", 80)
    resp = lab.agent.api("GET", "/v1/endpoint/other")
    ns = resp.json()["netns"]
    lab.workers["other"].close()
    lab.agent.api("DELETE", "/v1/endpoint/other")
    resp = lab.agent.api("PUT", "/v1/endpoint/other", {
        "netns": ns, "labels": ENDPOINTS["other"], "enforcement": "always"})
    assert resp.status_code == 201, resp.text
    lab.eps["other"] = resp.json()
    lab.workers["other"] = nsh.NetnsWorker(ns.rsplit("/", 1)[1])
    lab.workers["other"].call(serve_all)
    assert _eventually(lambda: not lab.tcp("client", "other", 80))
    lab.apply([{"endpointSelector": {"matchLabels": {"app": "other"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}])
    assert lab.tcp("client", "other", 80)
    lab.clear()


@pytest.mark.parametrize("flags,other_allowed,host_allowed", [
    (("--enforcement", "never"), True, True),
    (("--allow-host-ingress", "false"), False, False),
])
def test_agent_flags(node_netns, workdir, bpf_root, flags, other_allowed, host_allowed) -> None:
    agent = start_agent(node_netns, workdir, bpf_root, *flags)
    made = []
    try:
        workers = {}
        eps = {}
        for name in ("server", "other"):
            ns = unique("cpyt-ep")
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            eps[name] = agent.api("PUT", f"/v1/endpoint/{name}", {
                "netns": f"/var/run/netns/{ns}", "labels": ENDPOINTS[name]}).json()
            workers[name] = nsh.NetnsWorker(ns)
            workers[name].call(serve_all)
        lab = Lab(agent, eps, workers, {})
        lab.apply([server_rule([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}])])
        assert lab.tcp("other", "server", 80) is other_allowed
        with nsh.NetnsWorker(node_netns) as host:
            assert host.call(tcp_ok, lab.addr("server"), 80) is host_allowed
        for w in workers.values():
            w.close()
    finally:
        agent.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_to_entities_host_covers_node_addresses(clean) -> None:
    """Every address of the node is the host, not world: the uplink's included."""
    clean.apply([{"endpointSelector": {"matchLabels": {"app": "other"}},
                  "egress": [{"toEntities": ["host"]}]}])
    with nsh.NetnsWorker(clean.outside["node"]) as node:
        node.call(serve_all)
        assert clean.workers["other"].call(tcp_ok, "198.51.100.1", 80)
        assert clean.workers["other"].call(tcp_ok, "10.200.0.1", 81)
    assert not clean.workers["other"].call(tcp_ok, "198.51.100.2", 80), "outside is world"
    assert not clean.tcp("other", "server", 80)


def test_l7_rules_enforced_at_l4_and_said_so(clean) -> None:
    # Kafka rules with the Kafka proxy off (this module runs its agent with
    # --kafka-proxy false; the proxy itself: test_kafka_policy.py).
    clean.apply([server_rule([{
        "fromEndpoints": [{"matchLabels": {"app": "client"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                     "rules": {"kafka": [{"role": "produce", "topic": "public"}]}}]}])])
    assert clean.tcp("client", "server", 80)
    assert not clean.tcp("client", "server", 81)
    assert not clean.tcp("other", "server", 80)
    shown = clean.agent.cli("policy", "get")
    assert "enforced at L4 only" in shown.stdout
    assert '"topic": "public"' in shown.stdout
    ep = clean.agent.api("GET", "/v1/endpoint/server/policy").json()
    assert ep["l7_enforced_at_l4"], ep
