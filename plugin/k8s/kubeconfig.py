"""Reading a kubeconfig: just enough to reach the API server as kubectl would.

Supports the current context's cluster server, its CA (file or inline data, or
``insecure-skip-tls-verify``) and the user's bearer token (inline or file) or client
certificate and key (files or inline data).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml


class KubeconfigError(ValueError):
    pass


@dataclass
class KubeAccess:
    server: str
    verify: bool | str = True
    token: str | None = None
    cert: tuple[str, str] | None = None


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping")
    return doc


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise KubeconfigError(f"kubeconfig has no {what} named {name!r}")


def _materialise(data: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="cilium-py-k8s-", suffix=suffix)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(data))
    return path


def load_kubeconfig(path: str) -> KubeAccess:
    doc = _load(path)
    ctx_name = doc.get("current-context")
    contexts = doc.get("contexts") or []
    if not ctx_name and contexts:
        ctx_name = contexts[0].get("name")
    ctx = _named(contexts, ctx_name, "context")
    cluster = _named(doc.get("clusters") or [], ctx.get("cluster"), "cluster")
    user = _named(doc.get("users") or [], ctx.get("user"), "user") if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError("kubeconfig cluster has no server")
    verify: bool | str = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority"):
        verify = cluster["certificate-authority"]
    elif cluster.get("certificate-authority-data"):
        verify = _materialise(cluster["certificate-authority-data"], ".crt")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        with open(user["tokenFile"], encoding="utf-8") as fh:
            token = fh.read().strip()
    cert = None
    if user.get("client-certificate") and user.get("client-key"):
        cert = (user["client-certificate"], user["client-key"])
    elif user.get("client-certificate-data") and user.get("client-key-data"):
        cert = (_materialise(user["client-certificate-data"], ".crt"),
                _materialise(user["client-key-data"], ".key"))
    return KubeAccess(server.rstrip("/"), verify, token, cert)
