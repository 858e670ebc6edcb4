"""Kafka L7 policy end to end (issue 14): agent, datapath redirect, Kafka proxy.

One agent in a node namespace and five endpoints: the test broker (``app=kafka``,
tests/support/kafka_broker.py, one process on IPv4 and one on IPv6, each advertising
its own address) and empire-hq, empire-outpost, empire-backup and a rebel. The
clients are real (kafka-python, aiokafka, kcat) and run in the endpoint namespaces;
they talk to the broker's address and the datapath redirects their connections to
the agent's Kafka proxy. Cilium's Star Wars policy decides.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from tests.conftest import CLI, RunningAgent, start_agent, unique
from tests.support import kafka_starwars as sw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENDPOINTS = {
    "kafka": [sw.BROKER],
    "hq": [sw.HQ],
    "outpost": [sw.OUTPOST],
    "backup": [sw.BACKUP],
    "rebel": ["container:app=rebel"],
}
LABEL = {"key": "test", "value": "kafka", "source": "unspec"}


class Galaxy:
    def __init__(self, agent: RunningAgent, eps: dict, netns: dict) -> None:
        self.agent, self.eps, self.netns = agent, eps, netns

    def broker(self, fam: str = "ipv4") -> str:
        a = self.eps["kafka"]["addressing"][fam]
        return f"{a}:9092" if fam == "ipv4" else f"[{a}]:9092"

    def client(self, who: str, *args: str, fam: str = "ipv4", timeout: float = 8) -> dict:
        """Run tests/support/kafka_client.py in ``who``'s namespace."""
        action, topic, *rest = args
        res = subprocess.run(
            ["ip", "netns", "exec", self.netns[who], sys.executable, "-m",
             "tests.support.kafka_client", action, self.broker(fam), topic, *rest,
             "--timeout", str(timeout)],
            capture_output=True, text=True, timeout=timeout + 30, cwd=ROOT)
        assert res.stdout.strip(), res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    def kcat(self, who: str, *args: str, data: str | None = None, fam: str = "ipv4"
             ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns[who], "kcat", "-b", self.broker(fam),
             "-m", "8", *args], input=data, capture_output=True, text=True, timeout=40)

    def apply(self, rules: list) -> None:
        for rule in rules:
            rule.setdefault("labels", [LABEL])
        resp = self.agent.api("PUT", "/v1/policy", rules)
        assert resp.status_code == 200, resp.text
        rev = resp.json()["revision"]
        wait = self.agent.api("GET", f"/v1/policy/wait/{rev}?timeout=30")
        assert wait.status_code == 200, wait.text

    def clear(self) -> None:
        if self.agent.api("GET", "/v1/policy").json()["policy"]:
            resp = self.agent.api("DELETE", "/v1/policy")
            assert resp.status_code == 200
            self.agent.api("GET", f"/v1/policy/wait/{resp.json()['revision']}?timeout=30")


@pytest.fixture(scope="module")
def galaxy():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    names: list[str] = []
    brokers: list[subprocess.Popen] = []

    def make(prefix: str) -> str:
        n = unique(prefix)
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        names.append(n)
        return n

    work = tempfile.mkdtemp(prefix="cpyt-")
    bpf_root = f"/sys/fs/bpf/{unique()}"
    agent = None
    try:
        node = make("cpyt-node")
        agent = start_agent(node, work, bpf_root, "--l7-proxy", "false")
        eps, netns = {}, {}
        for name, labels in ENDPOINTS.items():
            ns = make("cpyt-ep")
            resp = agent.api("PUT", f"/v1/endpoint/{name}",
                             {"netns": f"/var/run/netns/{ns}", "labels": labels})
            assert resp.status_code == 201, resp.text
            eps[name], netns[name] = resp.json(), ns
        g = Galaxy(agent, eps, netns)
        for listen, fam in (("0.0.0.0:9092", "ipv4"), ("[::]:9092", "ipv6")):
            brokers.append(subprocess.Popen(
                ["ip", "netns", "exec", netns["kafka"], sys.executable, "-m",
                 "tests.support.kafka_broker", "--listen", listen,
                 "--advertise", g.broker(fam), *(f"--topic={t}" for t in sw.TOPICS),
                 "--topic=rebel-plans"],
                cwd=ROOT, stdout=subprocess.PIPE, text=True))
        for proc in brokers:
            assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
        yield g
    finally:
        for proc in brokers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)
        if agent is not None:
            agent.stop()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bpf_root, ignore_errors=True)


@pytest.fixture
def clean(galaxy: Galaxy):
    galaxy.clear()
    yield galaxy
    galaxy.clear()


def test_star_wars_with_kafka_python_and_aiokafka(clean: Galaxy) -> None:
    clean.apply(json.loads(json.dumps(sw.POLICY)))
    assert clean.client("hq", "produce", "deathstar-plans", "exhaust port") == {"sent": 1}
    assert clean.client("hq", "produce", "empire-announce", "a1", "a2") == {"sent": 2}
    denied = clean.client("hq", "produce", "rebel-plans", "x")
    assert denied["error"] == "TopicAuthorizationFailedError", denied

    got = clean.client("outpost", "consume", "empire-announce", "--count", "2",
                       "--group", "outpost")
    assert got == {"messages": ["a1", "a2"]}
    spy = clean.client("outpost", "produce", "empire-announce", "fake")
    assert spy["error"] == "TopicAuthorizationFailedError", spy
    # aiokafka sees the same refusal.
    spy = clean.client("outpost", "produce", "empire-announce", "fake", "--library", "aiokafka")
    assert spy["error"] == "TopicAuthorizationFailedError", spy
    got = clean.client("backup", "consume", "deathstar-plans", "--library", "aiokafka",
                       "--group", "backup")
    assert got == {"messages": ["exhaust port"]}

    # No rule lets the rebel in at all: dropped at L3/L4, no proxy involved.
    rebel = clean.client("rebel", "produce", "empire-announce", "x", timeout=3)
    assert "error" in rebel and rebel["error"] != "TopicAuthorizationFailedError", rebel


def test_star_wars_with_kcat_over_ipv6(clean: Galaxy) -> None:
    clean.apply(json.loads(json.dumps(sw.POLICY)))
    done = clean.kcat("hq", "-P", "-t", "deathstar-plans", data="v6 plan\n", fam="ipv6")
    assert done.returncode == 0, done.stderr
    done = clean.kcat("backup", "-C", "-t", "deathstar-plans", "-o", "beginning", "-c", "1",
                      "-e", fam="ipv6")
    assert done.returncode == 0 and done.stdout == "v6 plan\n", done.stderr
    done = clean.kcat("outpost", "-C", "-t", "deathstar-plans", "-o", "beginning", "-c", "1",
                      "-e", fam="ipv6")
    assert done.returncode != 0 and "authoriz" in done.stderr.lower(), done.stderr


def test_egress_kafka_rules(clean: Galaxy) -> None:
    clean.apply([{
        "endpointSelector": {"matchLabels": {"app": "empire-outpost"}},
        "egress": [{
            "toEndpoints": [{"matchLabels": {"app": "kafka"}}],
            "toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}],
                         "rules": {"kafka": [{"role": "consume", "topic": "empire-announce"},
                                             {"apiKey": "produce", "topic": "empire-announce",
                                              "clientID": "loyal-outpost"}]}}],
        }],
    }])
    assert clean.client("outpost", "produce", "empire-announce", "report",
                        "--client-id", "loyal-outpost") == {"sent": 1}
    spy = clean.client("outpost", "produce", "empire-announce", "x", "--client-id", "other")
    assert spy["error"] == "TopicAuthorizationFailedError", spy
    got = clean.client("outpost", "consume", "empire-announce", "--count", "10", timeout=3)
    assert "report" in got["messages"]
    # hq has no egress rules: not restricted.
    assert clean.client("hq", "produce", "rebel-plans", "x") == {"sent": 1}


def test_monitor_shows_kafka_records_and_trace_judges_requests(clean: Galaxy) -> None:
    clean.apply(json.loads(json.dumps(sw.POLICY)))
    env = dict(os.environ, CILIUM_PY_SOCK=clean.agent.socket)
    monitor = subprocess.Popen([CLI, "monitor", "--type", "l7", "-n", "40"], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert monitor.stdout is not None
        assert "Listening" in monitor.stdout.readline()
        clean.client("outpost", "produce", "deathstar-plans", "x", timeout=3)
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(" denied " in line for line in lines):
            lines.append(monitor.stdout.readline())
    finally:
        monitor.send_signal(signal.SIGINT)
        monitor.wait(5)
    outpost = clean.eps["outpost"]["identity"]
    denied = [line for line in lines if " denied " in line]
    assert denied, lines
    assert "<> kafka denied ingress" in denied[0]
    assert f"outpost({outpost}) -> kafka(" in denied[0]
    assert "produce v" in denied[0] or "metadata v" in denied[0]
    assert "topics=deathstar-plans error=29" in denied[0]

    def trace(*extra: str) -> dict[str, Any]:
        res = clean.agent.cli("policy", "trace", "-s", sw.OUTPOST, "-d", sw.BROKER,
                              "--dport", "9092/TCP", *extra, "-o", "json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    doc = trace("--kafka-api-key", "fetch", "--kafka-api-version", "11",
                "--kafka-topic", "empire-announce")
    assert doc["verdict"] == "ALLOWED", doc
    doc = trace("--kafka-api-key", "produce", "--kafka-topic", "empire-announce")
    assert doc["verdict"] == "DENIED"
    assert "no rule allows Produce" in doc["ingress"]["reason"]
    text = clean.agent.cli("policy", "trace", "-s", sw.OUTPOST, "-d", sw.BROKER, "--dport",
                           "9092/TCP", "--kafka-api-key", "Fetch", "--kafka-topic",
                           "deathstar-plans").stdout
    assert "Final verdict: DENIED" in text and "deathstar-plans" in text
    bad = clean.agent.cli("policy", "trace", "-s", sw.OUTPOST, "-d", sw.BROKER,
                          "--kafka-api-key", "nope")
    assert bad.returncode != 0 and "kafka-api-key" in (bad.stderr + bad.stdout)
