"""An agent with a kubeconfig gives pods their Kubernetes labels (k8s: source)."""

from __future__ import annotations

import subprocess

from tests.conftest import start_agent, unique
from tests.support.netns import NetnsWorker
from tests.unit.k8s.test_k8s_pod_labels import fake_apiserver_url, write_kubeconfig


def test_pod_labels_from_api_server(node_netns, workdir, bpf_root, tmp_path) -> None:
    # The agent lives in the node namespace; so does the stand-in API server.
    server = NetnsWorker(node_netns)
    url = server.call(fake_apiserver_url)
    kc = write_kubeconfig(tmp_path / "kubeconfig", url)
    agent = start_agent(node_netns, workdir, bpf_root, "--kubeconfig", str(kc))
    ns = unique("cpyt-ep")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        resp = agent.api("PUT", "/v1/endpoint/pod1", {
            "netns": f"/var/run/netns/{ns}",
            "labels": ["k8s:io.kubernetes.pod.namespace=default",
                       "k8s:io.kubernetes.pod.name=web-1"]})
        assert resp.status_code == 201, resp.text
        labels = resp.json()["labels"]
        assert "k8s:app=web" in labels and "k8s:tier=front" in labels
        trace = agent.api("GET", "/v1/identity/" + str(resp.json()["identity"])).json()
        assert "k8s:app=web" in trace["labels"]
        missing = agent.api("PUT", "/v1/endpoint/pod2", {
            "netns": f"/var/run/netns/{ns}", "interface-name": "eth1",
            "labels": ["k8s:io.kubernetes.pod.namespace=default",
                       "k8s:io.kubernetes.pod.name=nope"]})
        assert missing.status_code == 404 and "nope" in missing.text
    finally:
        agent.stop()
        server.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_broken_kubeconfig_exits_2(tmp_path) -> None:
    from tests.conftest import AGENT

    res = subprocess.run([AGENT, "--kubeconfig", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "kubeconfig" in res.stderr
