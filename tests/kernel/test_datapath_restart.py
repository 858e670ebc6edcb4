"""Agent restart: the datapath outlives its process and a new one picks it up.

A TCP stream runs between two endpoints while the process that started the
datapath is killed with SIGKILL and a new one compiles the programs again. The
stream must not notice: the old programs stay attached, the pinned maps keep
their state (policy and ipcache included), the new compile reuses the very
same maps, and re-attaching the endpoints swaps the programs in place without
dropping the endpoints' policy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cilium_py.labels import LabelSet
from cilium_py.policy import (
    Action,
    Direction,
    DirectionPolicy,
    PolicyKey,
    Protocol,
    ResolvedPolicy,
    Verdict,
)
from tests.support import netns as tn

pytestmark = pytest.mark.kernel

PORT = 6001
CHUNK = bytes(range(256)) * 4  # 1 KiB with a pattern: reordering or loss would show


def _stream_ct(rows: list[dict], src: str) -> dict:
    found = [r for r in rows if r["protocol"] == "tcp" and r["dport"] == PORT
             and r["src"] == src and r["direction"] == "egress"]
    assert len(found) == 1, rows
    return found[0]


def ingress_from(identity: int) -> ResolvedPolicy:
    """Ingress enforced, allowing ``identity`` on every port; egress open."""
    ingress = DirectionPolicy(Direction.INGRESS, True, {
        PolicyKey(identity, 0, Protocol.ANY, Direction.INGRESS): Verdict(Action.ALLOW)})
    return ResolvedPolicy(LabelSet(), ingress, DirectionPolicy(Direction.EGRESS, False, {}))


def test_tcp_stream_survives_datapath_restart(node_topology: tn.NodeTopology) -> None:
    topo = node_topology
    ep1, ep2 = topo.endpoints
    bpf_root = os.path.join(tn.BPFFS, tn.unique_name())
    workers: list[tn.NetnsWorker] = []
    try:
        first = tn.NetnsWorker(topo.node)
        workers.append(first)
        started = first.call(tn.datapath_start, bpf_root, topo.endpoints, ct_size=4096,
                             endpoint_size=64, timeout=120)
        map_ids = first.call(tn.datapath_call, "map_ids")
        ipcache = {f"{ep.ipv4}/32": ep.identity for ep in topo.endpoints}
        first.call(tn.datapath_call, "set_ipcache", ipcache)
        first.call(tn.datapath_call, "set_policy", ep2.datapath_info(), ingress_from(ep1.identity))

        sink = tn.NetnsWorker(ep2.netns)
        workers.append(sink)
        sink.call(tn.tcp_sink_start, ep2.ipv4, PORT)
        sender = tn.NetnsWorker(ep1.netns)
        workers.append(sender)
        sender.call(tn.tcp_stream_start, ep2.ipv4, PORT, CHUNK, 0.01)
        time.sleep(0.3)
        ct_before = _stream_ct(first.call(tn.datapath_call, "ct_entries"), ep1.ipv4)
        local_before = first.call(tn.datapath_call, "metrics")["from-endpoint-local-delivery"]

        # The agent dies hard; its programs keep running on the veths.
        first.kill()
        time.sleep(0.3)

        second = tn.NetnsWorker(topo.node)
        workers.append(second)
        restarted = second.call(tn.datapath_start, bpf_root, topo.endpoints, attach=False,
                                ct_size=4096, endpoint_size=64, timeout=120)
        # Fresh compile, same maps, state intact before anything is re-attached.
        assert second.call(tn.datapath_call, "map_ids") == map_ids
        assert set(restarted["prog_ids"].values()).isdisjoint(started["prog_ids"].values())
        rows = second.call(tn.datapath_call, "endpoint_entries")
        assert {r["address"] for r in rows} == {ep1.ipv4, ep1.ipv6, ep2.ipv4, ep2.ipv6}
        ct_gap = _stream_ct(second.call(tn.datapath_call, "ct_entries"), ep1.ipv4)
        assert ct_gap["tx_packets"] > ct_before["tx_packets"]  # old programs, same map
        local_gap = second.call(tn.datapath_call, "metrics")["from-endpoint-local-delivery"]
        assert local_gap["packets"] > local_before["packets"]
        for ep in topo.endpoints:  # still the old programs
            assert second.call(tn.datapath_call, "attachment", ep.host_ifindex) == {
                "ingress": started["prog_ids"]["from_container"],
                "egress": started["prog_ids"]["to_container"],
            }

        # The new process finds the policy as it was: writing it again is a no-op.
        assert second.call(tn.datapath_call, "set_ipcache", ipcache) == {
            "added": 0, "changed": 0, "removed": 0}
        assert second.call(tn.datapath_call, "policy_entries", ep2.datapath_info()) == [
            {"direction": "ingress", "identity": ep1.identity, "port": 0, "protocol": "ANY",
             "action": "allow", "proxy_port": 0}]

        # Restore: re-attaching swaps in the new programs without a gap.
        for ep in topo.endpoints:
            second.call(tn.datapath_call, "attach_endpoint", ep.datapath_info())
            assert second.call(tn.datapath_call, "attachment", ep.host_ifindex) == {
                "ingress": restarted["prog_ids"]["from_container"],
                "egress": restarted["prog_ids"]["to_container"],
            }
        assert second.call(tn.datapath_call, "endpoint_configs")[ep2.host_ifindex]["policy"] == {
            "ingress_enforced": True, "egress_enforced": False}
        assert second.call(tn.datapath_call, "set_policy", ep2.datapath_info(),
                           ingress_from(ep1.identity)) == {
            "added": 0, "changed": 0, "removed": 0, "flags_changed": False}
        assert second.call(tn.datapath_call, "policy_writes")["policy_updates"] == 0
        time.sleep(0.3)
        ct_after = _stream_ct(second.call(tn.datapath_call, "ct_entries"), ep1.ipv4)
        assert ct_after["tx_packets"] > ct_gap["tx_packets"]

        sent = sender.call(tn.tcp_stream_stop, PORT)
        received = sink.call(tn.tcp_sink_result, PORT)
        assert sent["error"] is None and received["error"] is None
        assert sent["sent"] >= 50 * len(CHUNK)
        assert received["bytes"] == sent["sent"]
        assert received["data"] == CHUNK * (sent["sent"] // len(CHUNK))
        assert sent["ack"] == b"OK %d" % sent["sent"]
        assert not any(second.call(tn.datapath_call, "drop_counters").values())
    finally:
        # Programs die with the namespaces (fixture); pins go by name here.
        for worker in reversed(workers):
            worker.close()
        tn.remove_pins(bpf_root)


def _start_and_map_ids(bpf_root: str, ct_size: int) -> dict[str, int]:
    from cilium_py.datapath import Datapath

    dp = Datapath(bpf_root, ct_size=ct_size, endpoint_size=64)
    dp.start()
    try:
        return dp.map_ids()
    finally:
        dp.close()


def test_resized_map_replaced_others_reused(node_topology: tn.NodeTopology) -> None:
    topo = node_topology
    with tn.bpf_root() as bpf_root:
        first = tn.run_in_netns(topo.node, _start_and_map_ids, bpf_root, 4096, timeout=120)
        assert sorted(os.listdir(bpf_root)) == sorted(first)
        resized = tn.run_in_netns(topo.node, _start_and_map_ids, bpf_root, 8192, timeout=120)
    changed = {name for name in first if first[name] != resized[name]}
    assert changed == {"cpy_ct4", "cpy_ct6"}


def _start_error(path: str) -> str:
    from cilium_py.datapath import Datapath, DatapathError

    try:
        Datapath(path).start()
    except DatapathError as exc:
        return str(exc)
    return ""


def test_bpf_root_must_be_on_bpffs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    message = _start_error(str(tmp_path / "pins"))
    assert "not bpffs" in message
    assert "nsenter" in message
