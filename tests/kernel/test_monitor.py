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
