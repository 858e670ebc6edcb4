"""Secrets never reach a bug report."""

from __future__ import annotations

from cilium_py.bugtool import redact

KUBECONFIG = """apiVersion: v1
users:
- name: admin
  user:
    token: eyJhbGciOiJSUzI1NiJ9.secret-part
    client-key-data: LS0tLS1CRUdJTiBSU0Eg
clusters:
- cluster:
    server: https://10.0.0.1:6443
"""


def test_kubeconfig_credentials_are_redacted_and_the_rest_kept() -> None:
    out = redact(KUBECONFIG)
    assert "secret-part" not in out and "LS0tLS1CRUdJTiBSU0Eg" not in out
    assert "server: https://10.0.0.1:6443" in out and "name: admin" in out


def test_json_env_pem_and_headers() -> None:
    text = ('{"etcd-password": "hunter2", "node-name": "n1"}\n'
            "CILIUM_PY_ETCD_TOKEN=abc123 other=1\n"
            "Authorization: Bearer abc.def\n"
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----\n")
    out = redact(text)
    for secret in ("hunter2", "abc123", "abc.def", "MIIEpAIB"):
        assert secret not in out
    assert '"node-name": "n1"' in out and "other=1" in out
