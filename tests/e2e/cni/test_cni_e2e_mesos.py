"""A replay of the Mesos CNI isolator's invocation against the real agent.

The isolator execs one plugin (no conflist) with only the CNI_* variables set (no
CNI_ARGS, no PATH), points CNI_NETNS at a bind mount of the container's netns under
``/var/run/mesos/isolators/network/cni/<container-id>/ns``, injects the task's
NetworkInfo as ``args["org.apache.mesos"]["network_info"]`` and reads only a 0.2.0-style
result. Here the bind mount lives under the test's temp dir, and the plugin and config
come from ``cilium-py mesos install``'s code path.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_e2e import CNILab, serve_tcp, tcp_ok, wait_tcp

from cilium_py.mesos import install as mesos_install
from tests.support.netns import NetnsWorker

REPO = Path(__file__).resolve().parents[3]
ISOLATOR_ROOT = "var/run/mesos/isolators/network/cni"


class MesosAgent:
    """Does what the isolator does: bind-mounts the netns, injects args, execs the plugin."""

    def __init__(self, lab: CNILab) -> None:
        self.lab = lab
        self.root = lab.workdir / ISOLATOR_ROOT
        self.config_dir = lab.workdir / "mesos-cni-conf"
        self.plugins_dir = lab.workdir / "mesos-cni-bin"
        mesos_install.install(str(self.config_dir), str(self.plugins_dir),
                              socket_path=lab.agent.socket, log_file=str(lab.log_file))
        self.mounts: list[str] = []

    def network_config(self, cni_version: str | None) -> dict[str, Any]:
        conf = json.loads((self.config_dir / "cilium-py.conf").read_text())
        if cni_version is None:
            conf.pop("cniVersion")
        else:
            conf["cniVersion"] = cni_version
        return conf

    def container(self, netns_name: str) -> tuple[str, str]:
        """A Mesos container id and its netns handle, bind-mounted as the isolator does."""
        container_id = str(uuid.uuid4())
        handle = self.root / container_id / "ns"
        handle.parent.mkdir(parents=True)
        handle.touch()
        subprocess.run(["mount", "--bind", f"/var/run/netns/{netns_name}", str(handle)],
                       check=True)
        self.mounts.append(str(handle))
        return container_id, str(handle)

    def exec_plugin(self, command: str, container_id: str, netns: str,
                    conf: dict[str, Any], labels: dict[str, str]) -> subprocess.CompletedProcess:
        network_info = {
            "name": conf["name"],
            "labels": {"labels": [{"key": k, "value": v} for k, v in labels.items()]},
            "port_mappings": [{"host_port": 31080, "container_port": 80, "protocol": "tcp"}],
            "ip_addresses": [{"protocol": "IPv4"}],
        }
        stdin = {**conf, "args": {"org.apache.mesos": {"network_info": network_info}}}
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_PATH": str(self.plugins_dir), "CNI_IFNAME": "eth0", "CNI_NETNS": netns}
        plugin = self.plugins_dir / conf["type"]
        # The agent and so the host side of the veth live in the node namespace.
        return subprocess.run(["nsenter", f"--net=/var/run/netns/{self.lab.node}", "--",
                               "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                               str(plugin)], input=json.dumps(stdin).encode(),
                              capture_output=True, timeout=120)

    def cleanup(self) -> None:
        for path in self.mounts:
            subprocess.run(["umount", path], check=False, capture_output=True)


@pytest.fixture
def mesos(cni_lab: CNILab) -> Iterator[MesosAgent]:
    agent = MesosAgent(cni_lab)
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.mark.parametrize("cni_version", [None, "0.2.0"])
def test_isolator_replay(mesos: MesosAgent, cni_lab: CNILab, cni_version: str | None) -> None:
    ns = cni_lab.container("cpyt-mesos")
    container_id, handle = mesos.container(ns)
    conf = mesos.network_config(cni_version)
    labels = {"app": "web", "tier": "frontend"}

    add = mesos.exec_plugin("ADD", container_id, handle, conf, labels)
    assert add.returncode == 0, add
    result = json.loads(add.stdout)
    assert set(result) == {"cniVersion", "ip4", "ip6", "dns"}
    assert result["cniVersion"] == (cni_version or "0.1.0")
    ep = cni_lab.endpoint(f"{container_id}-eth0").json()
    assert result["ip4"] == {
        "ip": f"{ep['addressing']['ipv4']}/32", "gateway": ep["gateway"]["ipv4"],
        # No gw-less route to the router: before 1.1 it would read "via the default
        # gateway" (issue 11 item 17).
        "routes": [{"dst": "0.0.0.0/0", "gw": ep["gateway"]["ipv4"]}]}
    assert result["ip6"]["ip"] == f"{ep['addressing']['ipv6']}/128"
    assert sorted(ep["labels"]) == ["mesos:app=web", "mesos:tier=frontend"]
    assert ep["container-id"] == container_id and ep["netns"] == handle
    addrs = subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=True).stdout
    assert ep["addressing"]["ipv4"] in addrs

    delete = mesos.exec_plugin("DEL", container_id, handle, conf, labels)
    assert (delete.returncode, delete.stdout) == (0, b""), delete
    assert cni_lab.endpoint(f"{container_id}-eth0").status_code == 404
    again = mesos.exec_plugin("DEL", container_id, handle, conf, labels)
    assert (again.returncode, again.stdout) == (0, b""), again


def test_isolator_error_is_a_cni_error(mesos: MesosAgent, cni_lab: CNILab) -> None:
    ns = cni_lab.container("cpyt-mesos")
    container_id, handle = mesos.container(ns)
    conf = mesos.network_config("0.2.0")
    bad = mesos.exec_plugin("ADD", container_id, handle + "-missing", conf, {"app": "web"})
    assert bad.returncode != 0
    doc = json.loads(bad.stdout)
    assert (doc["cniVersion"], doc["code"]) == ("0.2.0", 4)


def test_mesos_label_policy_allows_and_denies(mesos: MesosAgent, cni_lab: CNILab) -> None:
    """The shipped example policy, between tasks labelled as the Marathon examples are."""
    conf = mesos.network_config("0.2.0")
    tasks: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
    for app in ("web", "client", "other"):
        ns = cni_lab.container("cpyt-mesos")
        container_id, handle = mesos.container(ns)
        add = mesos.exec_plugin("ADD", container_id, handle, conf, {"app": app})
        assert add.returncode == 0, add
        tasks[app] = (ns, container_id, handle, json.loads(add.stdout))
    workers = {app: NetnsWorker(ns) for app, (ns, *_rest) in tasks.items()}
    try:
        workers["web"].call(serve_tcp, (80, 81))
        web = tasks["web"][3]["ip4"]["ip"].split("/")[0]
        assert wait_tcp(workers["client"], web, 80, True)
        assert workers["other"].call(tcp_ok, web, 80)
        cni_lab.apply_policy(json.loads((REPO / "mesos/examples/policy.json").read_text()))
        assert workers["client"].call(tcp_ok, web, 80), "mesos:app=client may reach web:80"
        assert not workers["client"].call(tcp_ok, web, 81), "only port 80 is allowed"
        assert not workers["other"].call(tcp_ok, web, 80), "mesos:app=other is not allowed"
    finally:
        for w in workers.values():
            w.close()
    for app, (_ns, container_id, handle, _res) in tasks.items():
        res = mesos.exec_plugin("DEL", container_id, handle, conf, {"app": app})
        assert res.returncode == 0, res
