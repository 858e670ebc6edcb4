"""cilium-py-cni through libcni against the real agent, chained with the reference portmap.

libcni (Debian's 1.1.2) is what containerd and CRI-O link: it parses the conflist,
injects capability args and prevResult, caches results and converts versions, so a
plugin that passes here behaves for those runtimes. That libcni and Debian's reference
plugins stop at spec 1.0.0; the 1.1.0 verbs (GC, STATUS) are driven through libcni's
own exec layer (``raw``) instead.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from cni_e2e import LIBCNI_VERSIONS, CNILab, addresses_in, delete_netns, serve_tcp, tcp_ok, wait_tcp

from cilium_py.cni import install
from tests.support.netns import NetnsWorker

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name};" \
           "K8S_POD_INFRA_CONTAINER_ID={cid}"


def pod_args(name: str, cid: str) -> str:
    return POD_ARGS.format(name=name, cid=cid)


def nat_rules(lab: CNILab) -> str:
    return lab.node_run("iptables-save", "-t", "nat").stdout


@pytest.mark.parametrize("version", LIBCNI_VERSIONS)
def test_chain_add_check_del(cni_lab: CNILab, version: str) -> None:
    ns = cni_lab.container()
    cid = f"cpyt{version.replace('.', '')}ctr"
    conflist = cni_lab.conflist(version)
    ports = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]

    add = cni_lab.drive("add", conflist=conflist, netns=ns, cid=cid,
                        args=pod_args("cart-0", cid), port_mappings=ports)
    assert add.returncode == 0, add
    res = add.doc
    assert res["cniVersion"] == version
    eth0 = [i for i in res["interfaces"] if i.get("sandbox")]
    assert eth0 == [{"name": "eth0", "mac": eth0[0]["mac"], "sandbox": f"/var/run/netns/{ns}"}]
    index = res["interfaces"].index(eth0[0])
    assert all(ip["interface"] == index for ip in res["ips"])
    if version == "1.0.0":
        assert all("version" not in ip for ip in res["ips"])
    else:
        assert sorted(ip["version"] for ip in res["ips"]) == ["4", "6"]
    # Before 1.1 a route without gw means "via the default gateway": every route has one.
    assert res["routes"] and all(r.get("gw") for r in res["routes"]), res["routes"]
    # What the result says is what the container has.
    assert {ip["address"] for ip in res["ips"]} == addresses_in(ns)

    ep = cni_lab.endpoint(f"{cid}-eth0").json()
    assert ep["container-id"] == cid and ep["container-name"] == "shop/cart-0"
    assert "k8s:io.kubernetes.pod.namespace=shop" in ep["labels"]
    # The pod name is endpoint metadata, never an identity label (issue 11 item 15).
    assert not [lbl for lbl in ep["labels"] if "io.kubernetes.pod.name=" in lbl]
    # portmap got our prevResult: it DNATs the host port to the container's address.
    ipv4 = ep["addressing"]["ipv4"]
    rules = nat_rules(cni_lab)
    assert "18080" in rules and f"{ipv4}:80" in rules, rules

    # CHECK without the port mappings: Debian's portmap (plugins 1.1.1) checks its IPv4
    # DNAT rules in ip6tables too and so fails CHECK for every dual-stack result, whatever
    # the first plugin. Our own CHECK runs first in the chain either way.
    check = cni_lab.drive("check", conflist=conflist, netns=ns, cid=cid,
                          args=pod_args("cart-0", cid))
    if version == "0.3.1":
        assert check.returncode != 0  # libcni refuses CHECK below 0.4.0
    else:
        assert check.returncode == 0, check
        assert any(r["msg"] == "check passed" and r.get("container") == cid
                   for r in map(json.loads, cni_lab.log_file.read_text().splitlines()))

    delete = cni_lab.drive("del", conflist=conflist, netns=ns, cid=cid,
                           args=pod_args("cart-0", cid), port_mappings=ports)
    assert delete.returncode == 0, delete
    assert cni_lab.endpoint(f"{cid}-eth0").status_code == 404
    assert addresses_in(ns) == set()
    assert f"{ipv4}:80" not in nat_rules(cni_lab)
    again = cni_lab.drive("del", conflist=conflist, netns=ns, cid=cid, port_mappings=ports)
    assert again.returncode == 0, again


@pytest.mark.parametrize("version", LIBCNI_VERSIONS)
def test_libcni_validates_the_network_list(cni_lab: CNILab, version: str) -> None:
    # CRI-O and podman validate a list before use; libcni's VERSION probe passes dummy
    # CNI_NETNS/CNI_CONTAINERID values, which once failed (issue 11 item 11).
    res = cni_lab.drive("validate", conflist=cni_lab.conflist(version))
    assert res.returncode == 0, res
    assert res.doc == {"capabilities": ["portMappings"]}


def test_installed_chain_runs_from_the_plugins_dir_alone(cni_lab: CNILab) -> None:
    # Runtimes look only in their plugins dir (/opt/cni/bin); Debian keeps portmap in
    # /usr/lib/cni. The installer must leave the shipped chain runnable there, or ADD and
    # DEL fail before cilium-py is called (issue 11 item 14). A temp dir stands in for
    # /opt/cni/bin: the machine's own is never touched.
    plugins, netd = cni_lab.workdir / "opt-cni-bin", cni_lab.workdir / "net.d"
    assert install.main(["--plugins-dir", str(plugins), "--config-dir", str(netd),
                         "--agent-socket", cni_lab.agent.socket,
                         "--log-file", str(cni_lab.log_file)]) == 0
    conflist = str(netd / install.CONFLIST_NAME)
    ns, cid = cni_lab.container(), "cpytinst"
    ports = [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]
    add = cni_lab.drive("add", conflist=conflist, netns=ns, cid=cid, port_mappings=ports,
                        cni_path=str(plugins))
    assert add.returncode == 0, add
    ipv4 = cni_lab.endpoint(f"{cid}-eth0").json()["addressing"]["ipv4"]
    assert f"{ipv4}:80" in nat_rules(cni_lab)
    delete = cni_lab.drive("del", conflist=conflist, netns=ns, cid=cid, port_mappings=ports,
                           cni_path=str(plugins))
    assert delete.returncode == 0, delete
    assert cni_lab.endpoint(f"{cid}-eth0").status_code == 404
    assert f"{ipv4}:80" not in nat_rules(cni_lab)


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_check_fails_when_the_interface_was_removed(cni_lab: CNILab, version: str) -> None:
    ns = cni_lab.container()
    conflist = cni_lab.conflist(version)
    assert cni_lab.drive("add", conflist=conflist, netns=ns, cid="cpytchk").returncode == 0
    subprocess.run(["ip", "-n", ns, "link", "del", "eth0"], check=True)
    check = cni_lab.drive("check", conflist=conflist, netns=ns, cid="cpytchk")
    assert check.returncode != 0
    assert check.doc["code"] == 101, check
    assert "eth0" in check.doc["error"]
    delete = cni_lab.drive("del", conflist=conflist, netns=ns, cid="cpytchk")
    assert delete.returncode == 0, delete
    assert cni_lab.endpoint("cpytchk-eth0").status_code == 404


def test_del_after_the_netns_is_gone_and_without_netns(cni_lab: CNILab) -> None:
    conflist = cni_lab.conflist("1.0.0")
    ns = cni_lab.container()
    assert cni_lab.drive("add", conflist=conflist, netns=ns, cid="cpytgone").returncode == 0
    delete_netns(ns)
    delete = cni_lab.drive("del", conflist=conflist, netns=ns, cid="cpytgone")
    assert delete.returncode == 0, delete
    assert cni_lab.endpoint("cpytgone-eth0").status_code == 404
    ns2 = cni_lab.container()
    assert cni_lab.drive("add", conflist=conflist, netns=ns2, cid="cpytnons").returncode == 0
    no_netns = cni_lab.drive("del", conflist=conflist, cid="cpytnons")
    assert no_netns.returncode == 0, no_netns
    assert cni_lab.endpoint("cpytnons-eth0").status_code == 404


def test_second_interface_in_one_container_refused_cleanly(cni_lab: CNILab) -> None:
    # One cilium-py interface per container: a second one would share the pool and the
    # gateway, and its traffic could not leave through the right veth.
    conflist = cni_lab.conflist("1.0.0", portmap=False)
    ns = cni_lab.container()
    first = cni_lab.drive("add", conflist=conflist, netns=ns, cid="cpyttwo", ifname="eth0")
    assert first.returncode == 0, first
    second = cni_lab.drive("add", conflist=conflist, netns=ns, cid="cpyttwo", ifname="net1")
    assert second.returncode != 0
    assert "already has a cilium-py interface" in (second.stdout + second.stderr)
    assert "net1" not in subprocess.run(["ip", "-n", ns, "-br", "link"], capture_output=True,
                                        text=True).stdout
    assert cni_lab.endpoint("cpyttwo-net1").status_code == 404
    res = cni_lab.drive("del", conflist=conflist, netns=ns, cid="cpyttwo", ifname="eth0")
    assert res.returncode == 0, res


def app_labels(app: str) -> dict:
    """``args.cni.labels`` as a runtime passes pod labels in the network config."""
    return {"args": {"cni": {"labels": [{"key": "app", "value": app}]}}}


def test_replicas_share_one_identity(cni_lab: CNILab) -> None:
    # Same labels, different pod names: one identity, as in Cilium (issue 11 item 15).
    conflist = cni_lab.conflist("1.0.0", portmap=False, **app_labels("cart"))
    eps = []
    for i in range(2):
        ns, cid = cni_lab.container(), f"cpytrep{i}"
        res = cni_lab.drive("add", conflist=conflist, netns=ns, cid=cid,
                            args=pod_args(f"cart-{i}", cid))
        assert res.returncode == 0, res
        eps.append((ns, cid, cni_lab.endpoint(f"{cid}-eth0").json()))
    assert eps[0][2]["identity"] == eps[1][2]["identity"]
    assert [ep["container-name"] for _, _, ep in eps] == ["shop/cart-0", "shop/cart-1"]
    for ns, cid, _ in eps:
        assert cni_lab.drive("del", conflist=conflist, netns=ns, cid=cid).returncode == 0


def test_connectivity_and_policy_between_two_pods(cni_lab: CNILab) -> None:
    pods, conflists = {}, {}
    for name in ("server", "client", "other"):
        ns = cni_lab.container()
        cid = f"cpyt{name}"
        conflists[name] = cni_lab.conflist("1.0.0", **app_labels(name))
        res = cni_lab.drive("add", conflist=conflists[name], netns=ns, cid=cid,
                            args=pod_args(name, cid))
        assert res.returncode == 0, res
        pods[name] = (ns, cni_lab.endpoint(f"{cid}-eth0").json())
    workers = {name: NetnsWorker(ns) for name, (ns, _) in pods.items()}
    try:
        workers["server"].call(serve_tcp, (80, 81))
        server = pods["server"][1]["addressing"]
        for fam in ("ipv4", "ipv6"):
            assert wait_tcp(workers["client"], server[fam], 80, True), fam
            assert workers["other"].call(tcp_ok, server[fam], 80), fam
        cni_lab.apply_policy([{
            "endpointSelector": {"matchLabels": {"container:app": "server"}},
            "ingress": [{
                "fromEndpoints": [{"matchLabels": {"container:app": "client"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }],
        }])
        for fam in ("ipv4", "ipv6"):
            assert workers["client"].call(tcp_ok, server[fam], 80), fam
            assert not workers["client"].call(tcp_ok, server[fam], 81), fam
            assert not workers["other"].call(tcp_ok, server[fam], 80), fam
    finally:
        for w in workers.values():
            w.close()
    for name, (ns, _) in pods.items():
        res = cni_lab.drive("del", conflist=conflists[name], netns=ns, cid=f"cpyt{name}")
        assert res.returncode == 0, res


def test_spec_1_1_0_verbs(cni_lab: CNILab) -> None:
    """ADD/CHECK/STATUS/GC/DEL at 1.1.0 through libcni's exec layer (no 1.1.0 libcni here)."""
    ns_keep, ns_stale, ns_other = cni_lab.container(), cni_lab.container(), cni_lab.container()
    base = {"cniVersion": "1.1.0", "name": "cpyt-cilium", **cni_lab.plugin_conf()}
    conf = cni_lab.conf(base)
    # A second network on the same plugin and agent: GC of the first leaves it alone
    # (issue 11 item 13).
    other_conf = cni_lab.conf({**base, "name": "cpyt-other"})
    other = cni_lab.drive("raw", conf=other_conf, command="ADD", netns=ns_other, cid="cpytother")
    assert other.returncode == 0, other
    assert cni_lab.endpoint("cpytother-eth0").json()["network"] == "cpyt-other"

    version = cni_lab.drive("raw", conf=conf, command="VERSION")
    assert version.doc["supportedVersions"][-1] == "1.1.0", version
    results = {}
    for cid, ns in (("cpytkeep", ns_keep), ("cpytstale", ns_stale)):
        add = cni_lab.drive("raw", conf=conf, command="ADD", netns=ns, cid=cid)
        assert add.returncode == 0, add
        results[cid] = add.doc
    res = results["cpytkeep"]
    assert res["cniVersion"] == "1.1.0"
    assert all("version" not in ip for ip in res["ips"])
    assert {"dst": f"{res['ips'][0]['gateway']}/32", "scope": 253} in res["routes"]
    # The IPv6 route to the router is on-link too (issue 11 item 17).
    assert {"dst": f"{res['ips'][1]['gateway']}/128", "scope": 253} in res["routes"]

    check_conf = cni_lab.conf({**base, "prevResult": res})
    check = cni_lab.drive("raw", conf=check_conf, command="CHECK", netns=ns_keep, cid="cpytkeep")
    assert check.returncode == 0, check

    status = cni_lab.drive("raw", conf=conf, command="STATUS")
    assert (status.returncode, status.stdout) == (0, ""), status

    gc_conf = cni_lab.conf({**base, "cni.dev/valid-attachments": [
        {"containerID": "cpytkeep", "ifname": "eth0"}]})
    gc = cni_lab.drive("raw", conf=gc_conf, command="GC")
    assert gc.returncode == 0, gc
    assert cni_lab.endpoint("cpytkeep-eth0").status_code == 200
    assert cni_lab.endpoint("cpytstale-eth0").status_code == 404
    assert addresses_in(ns_stale) == set()
    assert cni_lab.endpoint("cpytother-eth0").status_code == 200
    assert addresses_in(ns_other) != set()
    gone = cni_lab.drive("raw", conf=other_conf, command="DEL", netns=ns_other, cid="cpytother")
    assert gone.returncode == 0, gone

    delete = cni_lab.drive("raw", conf=conf, command="DEL", netns=ns_keep, cid="cpytkeep")
    assert delete.returncode == 0, delete
    assert cni_lab.endpoint("cpytkeep-eth0").status_code == 404


def test_status_when_the_agent_is_down(private_cni_lab: CNILab) -> None:
    cni_lab = private_cni_lab
    conf = cni_lab.conf({"cniVersion": "1.1.0", "name": "cpyt-cilium", **cni_lab.plugin_conf()})
    cni_lab.agent.stop()
    status = cni_lab.drive("raw", conf=conf, command="STATUS")
    assert status.returncode != 0
    assert status.doc["code"] == 50, status


def test_twenty_concurrent_add_and_del(cni_lab: CNILab) -> None:
    conflist = cni_lab.conflist("1.0.0")
    nses = [cni_lab.container() for _ in range(20)]

    def add(i: int) -> object:
        return cni_lab.drive("add", conflist=conflist, netns=nses[i], cid=f"cpytconc{i}",
                             args=pod_args(f"p{i}", f"cpytconc{i}"))

    def delete(i: int) -> object:
        return cni_lab.drive("del", conflist=conflist, netns=nses[i], cid=f"cpytconc{i}")

    with ThreadPoolExecutor(max_workers=20) as pool:
        added = list(pool.map(add, range(20)))
    assert all(r.returncode == 0 for r in added), [r for r in added if r.returncode]
    v4 = [next(ip["address"] for ip in r.doc["ips"] if "." in ip["address"]) for r in added]
    assert len(set(v4)) == 20
    for i, addr in enumerate(v4):
        assert addr in addresses_in(nses[i])
    with ThreadPoolExecutor(max_workers=20) as pool:
        deleted = list(pool.map(delete, range(20)))
    assert all(r.returncode == 0 for r in deleted), [r for r in deleted if r.returncode]
    listing = cni_lab.agent.api("GET", "/v1/endpoint").json()
    assert [ep["id"] for ep in listing if ep["id"].startswith("cpytconc")] == []


def test_cni_log_records_every_exec(cni_lab: CNILab) -> None:
    ns = cni_lab.container()
    conflist = cni_lab.conflist("1.0.0", portmap=False)
    cni_lab.drive("add", conflist=conflist, netns=ns, cid="cpytlog")
    cni_lab.drive("del", conflist=conflist, netns=ns, cid="cpytlog")
    records = [json.loads(line) for line in cni_lab.log_file.read_text().splitlines()]
    done = [r["msg"] for r in records if r.get("container") == "cpytlog" and "done" in r["msg"]]
    assert done == ["ADD done", "DEL done"]


def test_pod_reaches_a_host_port_on_its_own_node(cni_lab: CNILab) -> None:
    """Pod to another pod's hostPort, and a pod to its own (hairpin), on one node.

    portmap DNATs node:18090 to the server pod; the reply must go back through the
    node's stack for the reverse NAT, or it arrives from the pod's own address and the
    client resets (issue 11 item 12). The server's ingress policy still sees the
    client's own identity. Real traffic between test namespaces.
    """
    ports = [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]
    pods, conflists = {}, {}
    for name in ("hpserver", "hpclient", "hpother"):
        ns, cid = cni_lab.container(), f"cpyt{name}"
        conflists[name] = cni_lab.conflist("1.0.0", **app_labels(name))
        res = cni_lab.drive("add", conflist=conflists[name], netns=ns, cid=cid,
                            args=pod_args(name, cid),
                            port_mappings=ports if name == "hpserver" else None)
        assert res.returncode == 0, res
        pods[name] = (ns, cid, cni_lab.endpoint(f"{cid}-eth0").json())
    workers = {name: NetnsWorker(ns) for name, (ns, _, _) in pods.items()}
    try:
        workers["hpserver"].call(serve_tcp, (80,))
        node = pods["hpserver"][2]["gateway"]
        server = pods["hpserver"][2]["addressing"]
        assert wait_tcp(workers["hpclient"], server["ipv4"], 80, True)
        for fam in ("ipv4", "ipv6"):
            assert wait_tcp(workers["hpclient"], node[fam], 18090, True), f"pod->hostPort {fam}"
            # portmap's snat masquerades the hairpin to the node's address.
            assert wait_tcp(workers["hpserver"], node[fam], 18090, True), f"hairpin {fam}"
            assert workers["hpclient"].call(tcp_ok, server[fam], 80), fam
        # Through the hostPort the server's policy judges the client's own identity.
        cni_lab.apply_policy([{
            "endpointSelector": {"matchLabels": {"container:app": "hpserver"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"container:app": "hpclient"}}]}],
        }])
        for fam in ("ipv4", "ipv6"):
            assert workers["hpclient"].call(tcp_ok, node[fam], 18090), f"allowed {fam}"
            assert not workers["hpother"].call(tcp_ok, node[fam], 18090), f"denied {fam}"
    finally:
        for w in workers.values():
            w.close()
    for name, (ns, cid, _) in pods.items():
        res = cni_lab.drive("del", conflist=conflists[name], netns=ns, cid=cid,
                            port_mappings=ports if name == "hpserver" else None)
        assert res.returncode == 0, res
