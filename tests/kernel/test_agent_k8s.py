"""An agent with a kubeconfig gives pods their Kubernetes labels (k8s: source)."""

from __future__ import annotations

import subprocess

from tests.conftest import start_agent, unique
from tests.support.netns import NetnsWorker
from tests.unit.k8s.test_k8s_pod_labels import fake_apiserver_url, write_kubeconfig

NS_LABEL = "k8s:io.kubernetes.pod.namespace=default"


def test_pod_labels_from_api_server(node_netns, workdir, bpf_root, tmp_path) -> None:
    # The agent lives in the node namespace; so does the stand-in API server.
    server = NetnsWorker(node_netns)
    url = server.call(fake_apiserver_url)
    kc = write_kubeconfig(tmp_path / "kubeconfig", url)
    agent = start_agent(node_netns, workdir, bpf_root, "--kubeconfig", str(kc))
    nses = [unique("cpyt-ep") for _ in range(2)]
    for ns in nses:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # As the CNI plugin sends it: the namespace is a label, the pod name metadata.
        replicas = []
        for i, ns in enumerate(nses, start=1):
            resp = agent.api("PUT", f"/v1/endpoint/pod{i}", {
                "netns": f"/var/run/netns/{ns}", "container-name": f"default/web-{i}",
                "labels": [NS_LABEL]})
            assert resp.status_code == 201, resp.text
            replicas.append(resp.json())
        labels = replicas[0]["labels"]
        assert "k8s:app=web" in labels and "k8s:tier=front" in labels
        assert not [lbl for lbl in labels if "io.kubernetes.pod.name=" in lbl]
        assert replicas[0]["container-name"] == "default/web-1"
        # Two replicas of one deployment share one identity (issue 11 item 15).
        assert replicas[0]["identity"] == replicas[1]["identity"]
        trace = agent.api("GET", "/v1/identity/" + str(replicas[0]["identity"])).json()
        assert "k8s:app=web" in trace["labels"]
        missing = agent.api("PUT", "/v1/endpoint/pod3", {
            "netns": f"/var/run/netns/{nses[0]}", "interface-name": "eth1",
            "container-name": "default/nope", "labels": [NS_LABEL]})
        assert missing.status_code == 404 and "nope" in missing.text
    finally:
        agent.stop()
        server.close()
        for ns in nses:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_broken_kubeconfig_exits_2(tmp_path) -> None:
    from tests.conftest import AGENT

    res = subprocess.run([AGENT, "--kubeconfig", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "kubeconfig" in res.stderr
