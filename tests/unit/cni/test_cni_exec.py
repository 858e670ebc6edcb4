"""Exec-level tests: the installed ``cilium-py-cni`` binary against a fake agent.

Each test runs the plugin as a runtime does (environment, stdin, stdout, exit code) and
checks what the spec demands: one JSON document on stdout and nothing else, the right
error code for every failure, idempotent DEL, CHECK noticing drift, safe concurrency.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cilium_py.cni.version import SUPPORTED
from tests.unit.cni.conftest import CNIRun, netconf
from tests.unit.cni.fake_agent import FakeAgent

Run = Callable[..., CNIRun]


def conf_for(agent: FakeAgent, version: str = "1.0.0", **extra: object) -> dict:
    return netconf(version, agent.socket_path, **extra)


def assert_error(res: CNIRun, code: int, version: str = "1.0.0") -> dict:
    assert res.returncode != 0, res
    doc = res.doc
    assert set(doc) == {"cniVersion", "code", "msg", "details"}, doc
    assert doc["code"] == code, doc
    assert doc["cniVersion"] == version
    assert res.stdout.count("\n") == 1  # the one document, nothing more
    return doc


# -- VERSION ----------------------------------------------------------------------------


def test_version_lists_exactly_the_supported_versions(run_cni: Run) -> None:
    res = run_cni("VERSION", b'{"cniVersion": "0.4.0"}', netns=None)
    assert res.returncode == 0 and res.stderr == ""
    assert res.doc == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED)}
    bare = run_cni("VERSION", b"", netns=None, drop=("CNI_CONTAINERID", "CNI_IFNAME"))
    assert bare.doc == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED)}


def test_version_ignores_libcni_dummy_environment(run_cni: Run) -> None:
    # libcni's GetVersionInfo (CRI-O, podman validate a network list with it) sets dummy
    # values; a relative CNI_NETNS must not fail VERSION (issue 11 item 11).
    res = run_cni("VERSION", b'{"cniVersion": "1.0.0"}', container_id="dummy",
                  netns="dummy", ifname="dummy", env={"CNI_PATH": "dummy"})
    assert res.returncode == 0, res
    assert res.doc == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED)}
    odd = run_cni("VERSION", b"", container_id="not/valid", netns="x", ifname="a" * 40)
    assert odd.returncode == 0, odd


# -- ADD: results per version -------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED)
def test_add_result_in_the_config_version(run_cni: Run, fake_agent: FakeAgent,
                                          container_netns: str, version: str) -> None:
    res = run_cni("ADD", conf_for(fake_agent, version), netns=container_netns)
    assert res.returncode == 0, res
    doc = res.doc
    assert doc["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert doc["ip4"] == {"ip": "10.200.0.2/32", "gateway": "10.200.0.1",
                              "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}]}
        assert doc["ip6"]["ip"] == "fd10:200::2/128"
        assert "interfaces" not in doc
    else:
        eth0 = doc["interfaces"][doc["ips"][0]["interface"]]
        assert eth0 == {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": container_netns}
        assert [ip["address"] for ip in doc["ips"]] == ["10.200.0.2/32", "fd10:200::2/128"]
        assert ("version" in doc["ips"][0]) == (version in ("0.3.0", "0.3.1", "0.4.0"))
    # Routes as the spec reads them: on-link routes carry scope 253 (1.1.0 only, both
    # families); before 1.1 a route without gw would mean "via the default gateway".
    routes = doc["routes"] if "routes" in doc else [
        *doc["ip4"].get("routes", []), *doc["ip6"].get("routes", [])]
    if version == "1.1.0":
        assert {"dst": "10.200.0.1/32", "scope": 253} in routes
        assert {"dst": "fd10:200::1/128", "scope": 253} in routes
    assert all(r.get("gw") or r.get("scope") == 253 for r in routes), routes
    method, path, body = fake_agent.requests[-1]
    assert (method, path) == ("PUT", "/v1/endpoint/ctr1-eth0")
    assert body == {"netns": container_netns, "interface-name": "eth0", "container-id": "ctr1",
                    "container-name": "", "network": "cpyt-net", "labels": [],
                    "addressing": {"ipv4": None, "ipv6": None}}


def test_add_again_returns_the_same_result(run_cni: Run, fake_agent: FakeAgent,
                                           container_netns: str) -> None:
    first = run_cni("ADD", conf_for(fake_agent), netns=container_netns)
    second = run_cni("ADD", conf_for(fake_agent), netns=container_netns)
    assert first.returncode == second.returncode == 0
    assert first.doc == second.doc


def test_kubernetes_args_become_labels(run_cni: Run, fake_agent: FakeAgent,
                                       container_netns: str) -> None:
    res = run_cni("ADD", conf_for(fake_agent, "0.3.1"), netns=container_netns,
                  cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7;"
                           "K8S_POD_INFRA_CONTAINER_ID=ctr1;K8S_POD_UID=u-1")
    assert res.returncode == 0, res
    body = fake_agent.requests[-1][2]
    # The pod name is metadata, not an identity label (issue 11 item 15).
    assert body["labels"] == ["k8s:io.kubernetes.pod.namespace=shop"]
    assert body["container-name"] == "shop/cart-7"


def test_cni_labels_and_dns_from_config(run_cni: Run, fake_agent: FakeAgent,
                                        container_netns: str) -> None:
    conf = conf_for(fake_agent, "1.0.0", dns={"nameservers": ["10.96.0.10"]},
                    args={"cni": {"labels": [{"key": "app", "value": "web"}]}})
    res = run_cni("ADD", conf, netns=container_netns)
    assert res.doc["dns"] == {"nameservers": ["10.96.0.10"]}
    assert fake_agent.requests[-1][2]["labels"] == ["container:app=web"]


def test_add_after_an_earlier_plugin_keeps_its_result(run_cni: Run, fake_agent: FakeAgent,
                                                      container_netns: str) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "dummy0"}],
            "ips": [{"address": "192.168.5.2/24", "interface": 0}]}
    res = run_cni("ADD", conf_for(fake_agent, prevResult=prev), netns=container_netns)
    doc = res.doc
    assert [i["name"] for i in doc["interfaces"]][0] == "dummy0"
    assert [ip["interface"] for ip in doc["ips"]] == [0, 2, 2]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_single_family_agent(run_cni: Run, short_tmp: str, container_netns: str,
                             family: str) -> None:
    agent = FakeAgent(os.path.join(short_tmp, "one.sock"), ipv4=family == "ipv4",
                      ipv6=family == "ipv6").start()
    try:
        res = run_cni("ADD", conf_for(agent, "0.2.0"), netns=container_netns)
        assert res.returncode == 0, res
        assert set(res.doc) == {"cniVersion", "dns", "ip4" if family == "ipv4" else "ip6"}
    finally:
        agent.stop()


# -- DEL --------------------------------------------------------------------------------


def test_del_is_idempotent_and_needs_no_netns(run_cni: Run, fake_agent: FakeAgent,
                                              container_netns: str) -> None:
    assert run_cni("ADD", conf_for(fake_agent), netns=container_netns).returncode == 0
    first = run_cni("DEL", conf_for(fake_agent), netns=None)
    second = run_cni("DEL", conf_for(fake_agent), netns=container_netns)
    assert (first.returncode, first.stdout) == (0, "")
    assert (second.returncode, second.stdout) == (0, "")
    assert fake_agent.endpoints == {}
    never = run_cni("DEL", conf_for(fake_agent), container_id="never-added")
    assert (never.returncode, never.stdout) == (0, "")


def test_del_after_the_netns_is_gone(run_cni: Run, fake_agent: FakeAgent) -> None:
    name = f"cpyt-{os.urandom(4).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        add = run_cni("ADD", conf_for(fake_agent, "0.4.0"), netns=f"/var/run/netns/{name}")
        assert add.returncode == 0, add
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    res = run_cni("DEL", conf_for(fake_agent, "0.4.0", prevResult=add.doc),
                  netns=f"/var/run/netns/{name}")
    assert (res.returncode, res.stdout) == (0, "")


def test_del_with_unreachable_agent_asks_to_retry(run_cni: Run, short_tmp: str) -> None:
    conf = netconf("1.0.0", os.path.join(short_tmp, "missing.sock"))
    assert_error(run_cni("DEL", conf), 11)


# -- CHECK ------------------------------------------------------------------------------


@pytest.fixture
def plumbing_agent(short_tmp: str) -> FakeAgent:
    agent = FakeAgent(os.path.join(short_tmp, "plumb.sock"), plumb=True).start()
    yield agent
    agent.stop()


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_passes_then_fails_when_the_interface_is_removed(
        run_cni: Run, plumbing_agent: FakeAgent, container_netns: str, version: str) -> None:
    add = run_cni("ADD", conf_for(plumbing_agent, version), netns=container_netns)
    assert add.returncode == 0, add
    conf = conf_for(plumbing_agent, version, prevResult=add.doc)
    ok = run_cni("CHECK", conf, netns=container_netns)
    assert (ok.returncode, ok.stdout) == (0, ""), ok
    subprocess.run(["nsenter", f"--net={container_netns}", "--", "ip", "link", "del", "eth0"],
                   check=True)
    doc = assert_error(run_cni("CHECK", conf, netns=container_netns), 101, version)
    assert "does not exist" in doc["msg"]


def test_check_fails_when_a_route_or_address_drifted(
        run_cni: Run, plumbing_agent: FakeAgent, container_netns: str) -> None:
    add = run_cni("ADD", conf_for(plumbing_agent), netns=container_netns)
    conf = conf_for(plumbing_agent, prevResult=add.doc)
    subprocess.run(["nsenter", f"--net={container_netns}", "--", "ip", "route", "del",
                    "default"], check=True)
    doc = assert_error(run_cni("CHECK", conf, netns=container_netns), 101)
    assert "0.0.0.0/0" in doc["msg"]
    # details add to msg, never repeat it (issue 11 item 17).
    assert doc["msg"] not in doc["details"]
    subprocess.run(["nsenter", f"--net={container_netns}", "--", "ip", "addr", "del",
                    "10.200.0.2/32", "dev", "eth0"], check=True)
    doc = assert_error(run_cni("CHECK", conf, netns=container_netns), 101)
    assert "10.200.0.2/32" in doc["msg"] and "0.0.0.0/0" in doc["details"]
    assert doc["msg"] not in doc["details"]


def test_check_unknown_container_is_code_3(run_cni: Run, fake_agent: FakeAgent,
                                           container_netns: str) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [], "ips": []}
    assert_error(run_cni("CHECK", conf_for(fake_agent, prevResult=prev),
                         netns=container_netns), 3)


def test_check_needs_prev_result_and_0_4_0(run_cni: Run, fake_agent: FakeAgent,
                                           container_netns: str) -> None:
    assert_error(run_cni("CHECK", conf_for(fake_agent), netns=container_netns), 7)
    assert_error(run_cni("CHECK", conf_for(fake_agent, "0.3.1", prevResult={}),
                         netns=container_netns), 1, "0.3.1")


def test_check_on_a_path_that_is_no_netns_is_an_invalid_environment(
        run_cni: Run, plumbing_agent: FakeAgent, container_netns: str, short_tmp: str) -> None:
    add = run_cni("ADD", conf_for(plumbing_agent), netns=container_netns)
    not_a_netns = Path(short_tmp, "plain-file")
    not_a_netns.write_text("")
    # The endpoint exists; the runtime passes a path that is not a network namespace.
    conf = conf_for(plumbing_agent, prevResult=add.doc)
    doc = assert_error(run_cni("CHECK", conf, netns=str(not_a_netns)), 4)
    assert "not a network namespace" in doc["msg"]


def test_check_in_another_netns_than_the_endpoints_fails(
        run_cni: Run, plumbing_agent: FakeAgent, container_netns: str) -> None:
    add = run_cni("ADD", conf_for(plumbing_agent), netns=container_netns)
    conf = conf_for(plumbing_agent, prevResult=add.doc)
    # A real network namespace, but not the one the endpoint was attached to.
    doc = assert_error(run_cni("CHECK", conf, netns="/proc/self/ns/net"), 101)
    assert "not to CNI_NETNS /proc/self/ns/net" in doc["msg"]


# -- every error code --------------------------------------------------------------------


def test_code_1_incompatible_version(run_cni: Run, fake_agent: FakeAgent) -> None:
    doc = assert_error(run_cni("ADD", conf_for(fake_agent, "0.9.0")), 1, "1.1.0")
    assert "0.9.0" in doc["msg"]


def test_code_2_unsupported_field(run_cni: Run, fake_agent: FakeAgent,
                                  container_netns: str) -> None:
    conf = conf_for(fake_agent, ipam={"type": "host-local", "subnet": "10.1.0.0/16"})
    doc = assert_error(run_cni("ADD", conf, netns=container_netns), 2)
    assert "ipam" in doc["msg"] and "host-local" in doc["msg"]


@pytest.mark.parametrize("drop", ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME"])
def test_code_4_missing_variables(run_cni: Run, fake_agent: FakeAgent, drop: str) -> None:
    doc = assert_error(run_cni("ADD", conf_for(fake_agent), drop=(drop,)), 4)
    assert drop in doc["msg"]


def test_code_4_netns_does_not_exist(run_cni: Run, fake_agent: FakeAgent) -> None:
    doc = assert_error(run_cni("ADD", conf_for(fake_agent), netns="/var/run/netns/cpyt-none"),
                       4)
    assert "CNI_NETNS" in doc["msg"]


def test_code_4_from_the_agent_naming_the_netns(run_cni: Run, fake_agent: FakeAgent,
                                                container_netns: str) -> None:
    fake_agent.fail = ("PUT", 400, {"error": "not a network namespace",
                                    "fields": {"netns": "not a netns"}})
    doc = assert_error(run_cni("ADD", conf_for(fake_agent), netns=container_netns), 4)
    assert "CNI_NETNS" in doc["msg"]


def test_code_4_bad_cni_args(run_cni: Run, fake_agent: FakeAgent,
                             container_netns: str) -> None:
    assert_error(run_cni("ADD", conf_for(fake_agent), netns=container_netns,
                         cni_args="K8S_POD_NAME"), 4)


def test_code_4_unknown_command(run_cni: Run) -> None:
    assert_error(run_cni("ATTACH", b"{}"), 4, "1.1.0")


@pytest.mark.parametrize("stdin", [b"", b"{not json", b"[]"])
def test_code_6_undecodable_config(run_cni: Run, stdin: bytes) -> None:
    assert_error(run_cni("ADD", stdin), 6, "1.1.0")


def test_code_7_invalid_config(run_cni: Run, fake_agent: FakeAgent) -> None:
    assert_error(run_cni("ADD", netconf("0.3.1", "relative/agent.sock")), 7, "0.3.1")
    bad_labels = conf_for(fake_agent, "0.2.0", args={"org.apache.mesos": {
        "network_info": {"labels": {"labels": [{"value": "no key"}]}}}})
    assert_error(run_cni("ADD", bad_labels), 7, "0.2.0")


def test_code_7_from_agent_400(run_cni: Run, fake_agent: FakeAgent,
                               container_netns: str) -> None:
    fake_agent.fail = ("PUT", 400, {"error": "invalid label", "fields": {"labels.0": "bad"}})
    assert_error(run_cni("ADD", conf_for(fake_agent), netns=container_netns), 7)


@pytest.mark.parametrize("status,body,code", [
    (409, {"error": "the IPv4 pool 10.200.0.0/16 is exhausted (65534 addresses in use)",
           "fields": {}}, 11),
    (503, {"error": "the BPF datapath is not running", "fields": {}}, 11),
    (409, {"error": "address 10.200.0.2 is held by endpoint x", "fields": {}}, 102),
    (500, {"error": "internal error: KeyError", "fields": {}}, 100),
])
def test_agent_failures_on_add(run_cni: Run, fake_agent: FakeAgent, container_netns: str,
                               status: int, body: dict, code: int) -> None:
    fake_agent.fail = ("PUT", status, body)
    doc = assert_error(run_cni("ADD", conf_for(fake_agent), netns=container_netns), code)
    assert body["error"] in doc["msg"]


def test_code_11_agent_not_running(run_cni: Run, short_tmp: str,
                                   container_netns: str) -> None:
    conf = netconf("0.4.0", os.path.join(short_tmp, "nobody.sock"))
    doc = assert_error(run_cni("ADD", conf, netns=container_netns), 11, "0.4.0")
    assert "not reachable" in doc["msg"]


def test_agent_answering_garbage(run_cni: Run, fake_agent: FakeAgent,
                                 container_netns: str) -> None:
    fake_agent.garbage = True
    assert_error(run_cni("ADD", conf_for(fake_agent), netns=container_netns), 11)


def test_failed_delete_is_reported(run_cni: Run, fake_agent: FakeAgent) -> None:
    fake_agent.fail = ("DELETE", 500, {"error": "netlink said no", "fields": {}})
    assert_error(run_cni("DEL", conf_for(fake_agent)), 100)


# -- STATUS (1.1.0) -----------------------------------------------------------------------


def test_status(run_cni: Run, fake_agent: FakeAgent, short_tmp: str) -> None:
    ok = run_cni("STATUS", conf_for(fake_agent, "1.1.0"), netns=None)
    assert (ok.returncode, ok.stdout) == (0, "")
    fake_agent.health = (503, {"status": "failure", "subsystems": {
        "store": {"status": "failure", "message": "disk full"},
        "datapath-prerequisites": {"status": "ok"}}})
    assert_error(run_cni("STATUS", conf_for(fake_agent, "1.1.0")), 50, "1.1.0")
    fake_agent.health = (503, {"status": "failure", "subsystems": {
        "datapath": {"status": "failure", "message": "programs gone"}}})
    doc = assert_error(run_cni("STATUS", conf_for(fake_agent, "1.1.0")), 51, "1.1.0")
    assert "programs gone" in doc["details"]
    gone = netconf("1.1.0", os.path.join(short_tmp, "gone.sock"))
    assert_error(run_cni("STATUS", gone), 50, "1.1.0")
    assert_error(run_cni("STATUS", conf_for(fake_agent, "1.0.0")), 1)


# -- GC (1.1.0) ---------------------------------------------------------------------------


def test_gc_removes_only_our_stale_attachments(run_cni: Run, fake_agent: FakeAgent,
                                               container_netns: str) -> None:
    for cid, ifname in [("keep", "eth0"), ("keep", "net1"), ("stale", "eth0")]:
        res = run_cni("ADD", conf_for(fake_agent, "1.1.0"), container_id=cid, ifname=ifname,
                      netns=container_netns)
        assert res.returncode == 0, res
    # An endpoint the Docker driver made: not ours to collect.
    fake_agent.endpoints["9f" * 32] = {"id": "9f" * 32, "container-id": "dockerctr",
                                       "interface-name": "eth0"}
    # Another network using this plugin and agent: its list is not ours (issue 11 item 13).
    other = {**conf_for(fake_agent, "1.1.0"), "name": "cpyt-other"}
    res = run_cni("ADD", other, container_id="elsewhere", netns=container_netns)
    assert res.returncode == 0, res
    assert fake_agent.requests[-1][2]["network"] == "cpyt-other"
    conf = conf_for(fake_agent, "1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": "keep", "ifname": "eth0"}, {"containerID": "keep", "ifname": "net1"}]})
    res = run_cni("GC", conf, netns=None, drop=("CNI_CONTAINERID", "CNI_IFNAME"))
    assert (res.returncode, res.stdout) == (0, ""), res
    assert sorted(fake_agent.endpoints) == sorted(["keep-eth0", "keep-net1", "9f" * 32,
                                                   "elsewhere-eth0"])
    assert_error(run_cni("GC", conf_for(fake_agent, "1.1.0")), 7, "1.1.0")
    assert_error(run_cni("GC", conf_for(fake_agent, "1.0.0", **{
        "cni.dev/valid-attachments": []})), 1)


# -- process discipline ---------------------------------------------------------------------


def test_logs_go_to_the_file_and_stderr_never_stdout(run_cni: Run, fake_agent: FakeAgent,
                                                     container_netns: str) -> None:
    ok = run_cni("ADD", conf_for(fake_agent, **{"log-level": "debug"}), netns=container_netns)
    json.loads(ok.stdout)  # exactly one document
    assert ok.stdout.count("\n") == 1 and ok.stderr == ""
    lines = [json.loads(line) for line in Path(run_cni.log_file).read_text().splitlines()]
    assert {rec["msg"] for rec in lines} >= {"creating endpoint", "endpoint ready", "ADD done"}
    assert all(rec["command"] == "ADD" and rec["container"] == "ctr1" for rec in lines)
    bad = run_cni("ADD", conf_for(fake_agent, "0.9.0"), netns=container_netns)
    assert "incompatible" in bad.stderr
    assert "incompatible" in Path(run_cni.log_file).read_text()


def test_unwritable_log_file_does_not_break_add(run_cni: Run, fake_agent: FakeAgent,
                                                container_netns: str) -> None:
    conf = conf_for(fake_agent, log_file="/proc/cpyt-no-such-dir/cni.log")
    res = run_cni("ADD", conf, netns=container_netns)
    assert res.returncode == 0
    assert json.loads(res.stdout)["ips"]
    assert "cannot open log file" in res.stderr


def test_twenty_concurrent_add_and_del(run_cni: Run, fake_agent: FakeAgent,
                                       container_netns: str) -> None:
    ids = [f"conc{i:02d}" for i in range(20)]

    def add(cid: str) -> CNIRun:
        return run_cni("ADD", conf_for(fake_agent), container_id=cid, netns=container_netns)

    def delete(cid: str) -> CNIRun:
        return run_cni("DEL", conf_for(fake_agent), container_id=cid, netns=container_netns)

    with ThreadPoolExecutor(max_workers=20) as pool:
        added = list(pool.map(add, ids))
    assert all(r.returncode == 0 for r in added), [r for r in added if r.returncode]
    addresses = [r.doc["ips"][0]["address"] for r in added]
    assert len(set(addresses)) == 20
    assert sorted(fake_agent.endpoints) == sorted(f"{c}-eth0" for c in ids)
    with ThreadPoolExecutor(max_workers=20) as pool:
        # interleave: each DEL races the ADD/DEL of another container
        results = list(pool.map(lambda c: (delete(c), add(c + "b"), delete(c + "b")), ids))
    for first_del, readd, second_del in results:
        assert (first_del.returncode, first_del.stdout) == (0, ""), first_del
        assert readd.returncode == 0 and readd.doc["ips"], readd
        assert (second_del.returncode, second_del.stdout) == (0, ""), second_del
    assert fake_agent.endpoints == {}
