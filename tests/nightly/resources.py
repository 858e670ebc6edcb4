"""What an agent holds, read from outside it, so a soak can see what leaks.

Each figure is read from the kernel, /proc or the agent's API, never from the code under
test's own bookkeeping alone: a veth the agent forgot still shows in ``ip link``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Snapshot:
    cycle: int
    veths: int  # lxc*/tmp* links in the namespace the endpoints' host sides live in
    addresses: int  # IPAM allocations the agent reports
    bpf_endpoints: int  # entries of the endpoints map (GET /v1/bpf/endpoint)
    identities: int  # identities with a user (unused ones live on for a grace time)
    iptables_rules: int  # rules in the namespace (iptables-save + ip6tables-save)
    state_files: int  # files under the agent's state directory
    fds: int  # open fds of the agent (master + workers) [+ the Docker plugin]
    rss_mib: float  # RSS of the agent (master + workers) [+ the Docker plugin]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _netns_cmd(netns: str) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{netns}", "--"] if netns else []


def process_tree(pid: int) -> list[int]:
    """A pid and its descendants (the agent is a gunicorn master and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def fds_and_rss(pids: list[int]) -> tuple[int, float]:
    fds, rss_kib = 0, 0
    for pid in pids:
        for p in process_tree(pid):
            try:
                fds += len(os.listdir(f"/proc/{p}/fd"))
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss_kib += int(line.split()[1])
            except OSError:
                pass
    return fds, rss_kib / 1024


def count_links(netns: str) -> int:
    out = subprocess.run([*_netns_cmd(netns), "ip", "-j", "link", "show"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for link in json.loads(out) if link["ifname"].startswith(("lxc", "tmp")))


def count_rules(netns: str) -> int:
    total = 0
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([*_netns_cmd(netns), tool], capture_output=True, text=True).stdout
        total += sum(1 for line in out.splitlines() if line.startswith("-A "))
    return total


def count_files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def snapshot(cycle: int, agent: Any, links_netns: str, extra_pids: tuple[int, ...] = ()
             ) -> Snapshot:
    """One reading. ``agent`` is a tests.conftest.RunningAgent."""
    identities = agent.api("GET", "/v1/identity").json()
    fds, rss = fds_and_rss([agent.proc.pid, *extra_pids])
    return Snapshot(
        cycle=cycle,
        veths=count_links(links_netns),
        addresses=len(agent.api("GET", "/v1/ipam").json()["allocations"]),
        bpf_endpoints=len(agent.api("GET", "/v1/bpf/endpoint").json()),
        identities=sum(1 for i in identities if int(i["id"]) >= 256
                       and agent.api("GET", f"/v1/identity/{i['id']}").json().get("users")),
        iptables_rules=count_rules(links_netns),
        state_files=count_files(agent.state_dir),
        fds=fds,
        rss_mib=round(rss, 1),
    )


# A soak passes when, after its last detach, these are back where they started...
EXACT = ("veths", "addresses", "bpf_endpoints", "identities", "iptables_rules")
# ...and these grew by no more than this (SQLite and log files, sockets, allocator arenas).
BOUNDS = {"fds": 16, "rss_mib": 40.0, "state_files": 4}


def leaks(first: Snapshot, last: Snapshot) -> list[str]:
    """What ``last`` holds beyond ``first`` outside the stated bounds; [] when clean."""
    out = []
    for key in EXACT:
        a, b = getattr(first, key), getattr(last, key)
        if b != a:
            out.append(f"{key}: {a} before, {b} after")
    for key, bound in BOUNDS.items():
        a, b = getattr(first, key), getattr(last, key)
        if b - a > bound:
            out.append(f"{key}: grew {b - a:g} (bound {bound:g})")
    return out
