"""Two agent instances on one host: start-up cleans up only what this agent made.

Before, the start-up sweep deleted every ``lxc*`` veth its agent did not know, so an
agent started for tests beside an installed one (or a second instance) deleted the
other's endpoint veths and cut its containers off.
"""

from __future__ import annotations

import subprocess

from cilium_py.endpoint.manager import REAP_PREFIX
from cilium_py.endpoint.naming import host_ifname
from cilium_py.store import open_store
from tests.conftest import start_agent, unique


def _veth(node: str, name: str, peer_ns: str) -> None:
    subprocess.run(["ip", "-n", node, "link", "add", name, "type", "veth", "peer", "name",
                    "eth0", "netns", peer_ns], check=True)


def _exists(node: str, name: str) -> bool:
    return subprocess.run(["ip", "-n", node, "link", "show", name],
                          capture_output=True).returncode == 0


def test_restart_keeps_another_instances_veths_and_finishes_its_own(
        node_netns: str, workdir: str, bpf_root: str) -> None:
    others, ours = unique("cpyt-oth"), unique("cpyt-our")
    for ns in (others, ours):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        agent = start_agent(node_netns, workdir, bpf_root)
        agent.stop()
        # Another instance's endpoint veth, and one of ours whose delete was cut short.
        foreign, reaped = host_ifname(unique("other")), host_ifname("ours-deleted")
        _veth(node_netns, foreign, others)
        _veth(node_netns, reaped, ours)
        store = open_store(None, agent.state_dir)
        store.put(REAP_PREFIX + reaped, b"ours-deleted")
        store.close()

        agent = start_agent(node_netns, workdir, bpf_root, state_dir=agent.state_dir)
        try:
            assert _exists(node_netns, foreign), "the other instance's veth was deleted"
            assert not _exists(node_netns, reaped), "our half-deleted veth is still there"
            assert agent.api("GET", "/v1/endpoint").json() == []
        finally:
            agent.stop()
        store = open_store(None, agent.state_dir)
        assert store.list(REAP_PREFIX) == []
        store.close()
    finally:
        for ns in (others, ours):
            subprocess.run(["ip", "netns", "del", ns], check=False)
