"""``cilium-py monitor`` against a real agent: agent events, filters, several readers,
and a stream that survives an agent restart."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import CLI, RunningAgent, nsenter, start_agent, unique
from tests.support import netns as nsh


class MonitorProc:
    """A ``cilium-py monitor -o json`` process whose lines are collected as they come."""

    def __init__(self, agent: RunningAgent, *args: str) -> None:
        env = dict(os.environ, CILIUM_PY_SOCK=agent.socket)
        self.proc = subprocess.Popen([*nsenter(agent.netns), CLI, "monitor", "-o", "json",
                                      *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The stream is live once the CLI says so on stderr (the agent subscribed it).
        assert self.proc.stderr is not None
        self.listening = self.proc.stderr.readline()
        assert self.listening.startswith("Listening for events"), self.listening

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append(json.loads(line))

    def wait_for(self, cond, timeout: float = 15.0) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.lines):
                if cond(ev):
                    return ev
            time.sleep(0.05)
        raise AssertionError(f"no such event; got {self.lines[-10:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def lab(node_netns: str, workdir: str, bpf_root: str) -> Iterator[tuple]:
    agent = start_agent(node_netns, workdir, bpf_root)
    names: list[str] = []
    try:
        yield agent, names, (node_netns, workdir, bpf_root)
    finally:
        agent.stop()
        for ns in names:
            nsh.delete_netns(ns)


def attach(agent: RunningAgent, names: list[str], ep: str, labels: list[str]) -> dict:
    ns = unique("cpyt-ep")
    nsh.create_netns(ns)
    names.append(ns)
    resp = agent.api("PUT", f"/v1/endpoint/{ep}", {"netns": f"/var/run/netns/{ns}",
                                                    "labels": labels})
    assert resp.status_code == 201, resp.text
    return {**resp.json(), "netns": ns}


def test_agent_events_and_filters_with_two_monitors(lab: tuple) -> None:
    agent, names, _ = lab
    everything = MonitorProc(agent)
    only_client_drops = MonitorProc(agent, "--type", "drop", "--from", "client")
    try:
        time.sleep(0.5)  # both subscribed
        client = attach(agent, names, "client", ["container:app=client"])
        server = attach(agent, names, "server", ["container:app=server"])
        everything.wait_for(lambda e: e.get("message") == "endpoint-created"
                            and e.get("endpoint") == "client")
        everything.wait_for(lambda e: e.get("message") == "identity-allocated"
                            and e.get("identity") == client["identity"]
                            and "app=client" in e.get("labels", ""))
        rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
                  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}]}]
        rev = agent.api("PUT", "/v1/policy", rules).json()["revision"]
        agent.api("GET", f"/v1/policy/wait/{rev}?timeout=10")
        everything.wait_for(lambda e: e.get("message") == "policy-imported"
                            and e.get("revision") == rev)
        everything.wait_for(lambda e: e.get("message") == "endpoint-regenerated"
                            and e.get("endpoint") == "server")
        # A denied ping from the client: both monitors see it, with endpoints named.
        subprocess.run([*nsenter(client["netns"]), "ping", "-c", "1", "-W", "1",
                        server["addressing"]["ipv4"]], capture_output=True)
        ev = only_client_drops.wait_for(lambda e: e.get("type") == "drop")
        assert ev["source-endpoint"] == "client" and ev["destination-endpoint"] == "server"
        assert ev["reason_name"] == "policy-denied"
        everything.wait_for(lambda e: e.get("type") == "drop"
                            and e.get("source-endpoint") == "client")
        # The server's own traffic never reaches the --from client monitor.
        subprocess.run([*nsenter(server["netns"]), "ping", "-c", "1", "-W", "1",
                        "198.51.100.77"], capture_output=True)
        time.sleep(0.5)
        assert all(e.get("source-endpoint") == "client" for e in only_client_drops.lines)
    finally:
        everything.stop()
        only_client_drops.stop()


def test_monitor_reconnects_across_an_agent_restart(lab: tuple) -> None:
    agent, names, (node_ns, workdir, bpf_root) = lab
    mon = MonitorProc(agent, "--type", "agent")
    try:
        time.sleep(0.5)
        agent.stop()
        restarted = start_agent(node_ns, workdir, bpf_root)
        lab[0].proc = restarted.proc  # the fixture stops whichever runs
        mon.wait_for(lambda e: e.get("type") == "monitor"
                     and "reconnected" in e.get("message", ""), 30)
        attach(restarted, names, "late", ["container:app=late"])
        mon.wait_for(lambda e: e.get("message") == "endpoint-created"
                     and e.get("endpoint") == "late")
        assert mon.proc.poll() is None
    finally:
        mon.stop()


def _hello(agent: RunningAgent, types: str = "drop") -> dict:
    """The first line of a monitor stream: which datapath events the kernel emits now."""
    from urllib.parse import quote

    import requests_unixsocket

    url = "http+unix://" + quote(agent.socket, safe="") + f"/v1/monitor?type={types}"
    with requests_unixsocket.Session() as session:
        with session.get(url, stream=True, timeout=10) as resp:
            assert resp.status_code == 200, resp.text
            return json.loads(next(resp.iter_lines()))


def _until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_trace_and_policy_verdict_events_only_while_wanted(lab: tuple) -> None:
    """Trace and verdict events come from the datapath only while a reader wants them;
    they name the endpoints, identities, observation point and the matching entry."""
    agent, names, _ = lab
    client = attach(agent, names, "client", ["container:app=client"])
    server = attach(agent, names, "server", ["container:app=server"])
    other = attach(agent, names, "other", ["container:app=other"])
    workers = {n: nsh.NetnsWorker(e["netns"]) for n, e in
               (("client", client), ("server", server), ("other", other))}
    mon = None
    try:
        workers["server"].call(nsh.serve_start, (8080, 8081), ())
        rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
                  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                               "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}]
        rev = agent.api("PUT", "/v1/policy", rules).json()["revision"]
        agent.api("GET", f"/v1/policy/wait/{rev}?timeout=10")
        # Nobody wants traces: the kernel emits drops only.
        assert _hello(agent)["datapath-events"] == ["drop"]

        mon = MonitorProc(agent, "--type", "trace", "--type", "policy-verdict")
        assert _until(lambda: _hello(agent)["datapath-events"]
                      == ["drop", "trace", "policy-verdict"])
        srv4 = server["addressing"]["ipv4"]
        assert workers["client"].call(nsh.tcp_ok, srv4, 8080, 1.0)
        allowed = mon.wait_for(lambda e: e.get("type") == "policy-verdict"
                               and e.get("verdict") == "allowed"
                               and e.get("source-endpoint") == "client")
        assert allowed["direction"] == "ingress" and allowed["endpoint"] == "server"
        assert allowed["destination-endpoint"] == "server" and allowed["dport"] == 8080
        assert allowed["src_identity"] == client["identity"]
        assert allowed["dst_identity"] == server["identity"]
        assert allowed["match"] == {"shape": "identity+port+protocol",
                                    "identity": client["identity"], "port": 8080,
                                    "protocol": "TCP"}
        syn = mon.wait_for(lambda e: e.get("type") == "trace"
                           and e.get("source-endpoint") == "client"
                           and e.get("dport") == 8080 and "SYN" in e.get("tcp_flags", ""))
        assert syn["observation"] == "to-endpoint" and syn["program"] == "from-container"
        assert syn["src_identity"] == client["identity"]
        assert syn["dst_identity"] == server["identity"]
        # The reply direction is traced too (delivered into the client).
        mon.wait_for(lambda e: e.get("type") == "trace" and e.get("sport") == 8080
                     and e.get("destination-endpoint") == "client")
        # The other client is denied: a verdict without a matching entry.
        assert not workers["other"].call(nsh.tcp_ok, srv4, 8080, 1.0)
        denied = mon.wait_for(lambda e: e.get("type") == "policy-verdict"
                              and e.get("source-endpoint") == "other")
        assert denied["verdict"] == "denied" and denied["match"] is None
        assert denied["src_identity"] == other["identity"]
        # The client on a port the rule does not open: denied as well.
        assert not workers["client"].call(nsh.tcp_ok, srv4, 8081, 1.0)
        mon.wait_for(lambda e: e.get("type") == "policy-verdict" and e.get("dport") == 8081
                     and e.get("verdict") == "denied")
        if server["addressing"].get("ipv6"):
            assert workers["client"].call(nsh.tcp_ok, server["addressing"]["ipv6"], 8080, 1.0)
            v6 = mon.wait_for(lambda e: e.get("type") == "policy-verdict"
                              and e.get("family") == "ipv6")
            assert v6["verdict"] == "allowed" and v6["source-endpoint"] == "client"

        # Human output of the CLI: one line per verdict.
        text = subprocess.Popen(
            [*nsenter(agent.netns), CLI, "monitor", "--type", "policy-verdict", "-n", "1"],
            env=dict(os.environ, CILIUM_PY_SOCK=agent.socket), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            workers["other"].call(nsh.tcp_ok, srv4, 8080, 1.0)
            out, _err = text.communicate(timeout=15)
        finally:
            if text.poll() is None:
                text.kill()
                text.wait(5)
        line = [x for x in out.splitlines() if "policy-verdict" in x][0]
        assert "policy-verdict denied ingress endpoint server" in line
        assert f"other({other['identity']}) -> server({server['identity']})" in line
        assert ":8080 TCP [SYN]" in line and "match none" in line

        # The last reader goes: the kernel stops emitting them.
        mon.stop()
        mon = None
        assert _until(lambda: _hello(agent)["datapath-events"] == ["drop"])
    finally:
        if mon is not None:
            mon.stop()
        for w in workers.values():
            w.close()
