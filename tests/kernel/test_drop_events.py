"""Drop events are rate-limited per endpoint; the counters stay exact and the stream
says how many events were suppressed (issue 10, drop events).

A container sends a flood of denied UDP datagrams to another; the agent's drop counter
for policy-denied grows by exactly the number sent, the monitor gets at most about the
limit's worth of drop events, then a ``drops-suppressed`` notice naming the flooding
endpoint, which ``cilium-py monitor`` prints as a line of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import CLI, RunningAgent, nsenter, start_agent
from tests.kernel.test_monitor import MonitorProc, attach
from tests.support import netns as nsh

FLOOD = 3000
LIMIT = 100  # DROP_EVENTS_PER_SEC in bpf/lib/drop.h
PORT = 40123

# Paced (a pause every 100 datagrams) so that no datagram is lost to a full backlog
# queue before the program sees it: every one must be counted.
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"x" * 32, (sys.argv[1], int(sys.argv[2])))
    if i % 100 == 99:
        time.sleep(0.005)
"""


@pytest.fixture
def lab(node_netns: str, workdir: str, bpf_root: str) -> Iterator[tuple]:
    agent = start_agent(node_netns, workdir, bpf_root)
    names: list[str] = []
    try:
        yield agent, names
    finally:
        agent.stop()
        for ns in names:
            nsh.delete_netns(ns)


def policy_denied(agent: RunningAgent) -> int:
    return int(agent.api("GET", "/v1/bpf/drops").json()["policy-denied"])


def flood(netns: str, addr: str, count: int) -> None:
    subprocess.run([*nsenter(netns), sys.executable, "-c", SENDER, addr, str(PORT),
                    str(count)], check=True, timeout=60)


def ours(ev: dict) -> bool:
    return ev.get("type") == "drop" and ev.get("dport") == PORT


def test_drop_event_flood_is_capped_and_counted_exactly(lab: tuple) -> None:
    agent, names = lab
    client = attach(agent, names, "client", ["container:app=client"])
    server = attach(agent, names, "server", ["container:app=server"])
    rules = [{"endpointSelector": {"matchLabels": {"app": "server"}},
              "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}]}]
    rev = agent.api("PUT", "/v1/policy", rules).json()["revision"]
    assert agent.api("GET", f"/v1/policy/wait/{rev}?timeout=30").status_code == 200
    addr = server["addressing"]["ipv4"]
    mon = MonitorProc(agent, "--type", "drop")
    env = dict(os.environ, CILIUM_PY_SOCK=agent.socket)
    text = subprocess.Popen([*nsenter(agent.netns), CLI, "monitor", "--type", "drop"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # One denied datagram: an event as before (and both monitors subscribed).
        deadline = time.monotonic() + 20
        while not any(ours(e) for e in mon.lines):
            assert time.monotonic() < deadline, f"no drop event; got {mon.lines[-5:]}"
            flood(client["netns"], addr, 1)
            time.sleep(0.5)
        time.sleep(1.2)  # a fresh rate window
        before_events = sum(1 for e in mon.lines if ours(e))
        before = policy_denied(agent)

        flood(client["netns"], addr, FLOOD)

        # The counter is exact: every datagram was dropped and counted.
        deadline = time.monotonic() + 10
        while policy_denied(agent) - before < FLOOD and time.monotonic() < deadline:
            time.sleep(0.1)
        assert policy_denied(agent) - before == FLOOD
        notice = mon.wait_for(lambda e: e.get("type") == "drops-suppressed"
                              and e.get("endpoint") == "client", 10)
        assert notice["identity"] == client["identity"]
        time.sleep(1.5)  # every notice for the flood is out (one sweep a second)
        events = sum(1 for e in mon.lines if ours(e)) - before_events
        suppressed = sum(e["count"] for e in mon.lines
                         if e.get("type") == "drops-suppressed" and e.get("endpoint") == "client")
        # Capped: the flood took about a second, so one or two windows of LIMIT (a
        # little more where CPUs raced on a window's reset).
        assert 0 < events <= 2 * LIMIT + 10, events
        assert events + suppressed >= FLOOD, (events, suppressed)

        # Capped, not muted: a second later the next denied datagram has its event.
        time.sleep(1.2)
        seen = len(mon.lines)
        flood(client["netns"], addr, 1)
        deadline = time.monotonic() + 10
        while not any(ours(e) for e in mon.lines[seen:]):
            assert time.monotonic() < deadline, "no drop event after the flood"
            time.sleep(0.05)
    finally:
        mon.stop()
        text.terminate()
        out, _ = text.communicate(timeout=10)
    line = [ln for ln in out.splitlines() if "suppressed" in ln]
    assert line and "drop events of endpoint client suppressed" in line[0], out[-2000:]
