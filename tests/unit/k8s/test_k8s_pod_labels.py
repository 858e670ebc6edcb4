"""Pod labels from the Kubernetes API server, via a kubeconfig.

kube-apiserver cannot run on this machine, so a small HTTP server on loopback answers
the one call the agent makes (GET /api/v1/namespaces/NS/pods/NAME), checking the bearer
token as the real server would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cilium_py.errors import NotFound, Unavailable
from cilium_py.k8s.kubeconfig import KubeconfigError, load_kubeconfig
from cilium_py.k8s.pods import PodLabels, pod_of

PODS = {("default", "web-1"): {"app": "web", "tier": "front"},
        ("default", "web-2"): {"app": "web", "tier": "front"}}
TOKEN = "s3cret"


class _FakeAPIServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        parts = self.path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            labels = PODS.get((parts[3], parts[5]))
            if labels is not None:
                body = json.dumps({"kind": "Pod", "metadata": {
                    "name": parts[5], "namespace": parts[3], "labels": labels}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
                return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def start_fake_apiserver() -> tuple[str, ThreadingHTTPServer]:
    """Serve on loopback of the current network namespace; returns (url, server)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAPIServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def fake_apiserver_url() -> str:
    """(runs in a NetnsWorker) start a server there and keep it for the worker's life."""
    url, server = start_fake_apiserver()
    _KEEP.append(server)
    return url


_KEEP: list[ThreadingHTTPServer] = []


@pytest.fixture
def apiserver():
    url, server = start_fake_apiserver()
    yield url
    server.shutdown()


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: test
clusters:
- name: c
  cluster:
    server: {server}
contexts:
- name: test
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: {token}
""")
    return path


def test_kubeconfig_yaml(tmp_path: Path) -> None:
    access = load_kubeconfig(str(write_kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443/")))
    assert access.server == "https://10.0.0.1:6443"
    assert access.token == TOKEN and access.verify is True


def test_kubeconfig_errors(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="cannot read"):
        load_kubeconfig(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("current-context: x\ncontexts: []\n")
    with pytest.raises(KubeconfigError, match="no context named"):
        load_kubeconfig(str(bad))


def test_pod_labels_become_k8s_labels(tmp_path: Path, apiserver: str) -> None:
    pods = PodLabels.from_kubeconfig(str(write_kubeconfig(tmp_path / "kc", apiserver)))
    assert pods.labels("default", "web-1") == ["k8s:app=web", "k8s:tier=front"]
    with pytest.raises(NotFound):
        pods.labels("default", "nope")


def test_wrong_token_or_no_server(tmp_path: Path, apiserver: str) -> None:
    pods = PodLabels.from_kubeconfig(str(write_kubeconfig(tmp_path / "kc", apiserver, "bad")))
    with pytest.raises(Unavailable, match="401"):
        pods.labels("default", "web-1")
    gone = PodLabels.from_kubeconfig(str(write_kubeconfig(tmp_path / "kc2",
                                                          "http://127.0.0.1:9")))
    with pytest.raises(Unavailable, match="cannot reach"):
        gone.labels("default", "web-1")


def test_pod_of() -> None:
    ns = ["k8s:io.kubernetes.pod.namespace=default"]
    # The CNI plugin names the pod in container-name, not in a label (issue 11 item 15).
    assert pod_of(ns, "default/web-1") == ("default", "web-1")
    assert pod_of(ns, "other/web-1") is None
    assert pod_of(ns, "") is None
    assert pod_of([], "default/web-1") is None
    # Another API client may still name it with the label.
    assert pod_of([*ns, "k8s:io.kubernetes.pod.name=web-1"]) == ("default", "web-1")
    assert pod_of(["k8s:io.kubernetes.pod.name=web-1"]) is None
