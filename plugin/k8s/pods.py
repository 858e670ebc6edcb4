"""Fetching a pod's labels so policies written for CiliumNetworkPolicy match.

Cilium gives a pod's endpoint ``k8s:<key>=<value>`` for each pod label plus
``k8s:io.kubernetes.pod.namespace``; the CNI plugin passes the namespace (a label) and
the pod's name (endpoint metadata, ``container-name`` = ``namespace/name``), the agent
looks the rest up here. The name never becomes a label, so replicas share an identity.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ..errors import NotFound, Unavailable
from .kubeconfig import KubeAccess, load_kubeconfig

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAME_LABEL = "io.kubernetes.pod.name"


class PodLabels:
    def __init__(self, access: KubeAccess, timeout: float = 5.0) -> None:
        self.access = access
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = access.verify
        if access.cert:
            self.session.cert = access.cert
        if access.token:
            self.session.headers["Authorization"] = f"Bearer {access.token}"

    @classmethod
    def from_kubeconfig(cls, path: str) -> PodLabels:
        return cls(load_kubeconfig(path))

    def labels(self, namespace: str, name: str) -> list[str]:
        url = (f"{self.access.server}/api/v1/namespaces/{quote(namespace, safe='')}"
               f"/pods/{quote(name, safe='')}")
        try:
            resp = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unavailable(f"cannot reach the Kubernetes API server: {exc}") from exc
        if resp.status_code == 404:
            raise NotFound(f"pod {namespace}/{name} not found in the API server",
                           {"container-name": f"{namespace}/{name}"})
        if resp.status_code != 200:
            raise Unavailable(
                f"Kubernetes API server answered {resp.status_code} for pod {namespace}/{name}")
        pod: dict[str, Any] = resp.json()
        pod_labels = (pod.get("metadata") or {}).get("labels") or {}
        return [f"k8s:{k}={v}" for k, v in sorted(pod_labels.items())]


def pod_of(labels: list[str], container_name: str = "") -> tuple[str, str] | None:
    """The (namespace, name) of the pod an endpoint belongs to, if it is one.

    The namespace is a label (``k8s:io.kubernetes.pod.namespace``); the name is not
    (it would make every pod its own identity) and comes from the endpoint's
    ``container-name``, which the CNI plugin sets to ``namespace/name``. A
    ``k8s:io.kubernetes.pod.name`` label given by another API client still names the pod.
    """
    found: dict[str, str] = {}
    for label in labels:
        for key in (NAMESPACE_LABEL, NAME_LABEL):
            prefix = f"k8s:{key}="
            if label.startswith(prefix):
                found[key] = label[len(prefix):]
    namespace = found.get(NAMESPACE_LABEL)
    if not namespace:
        return None
    ns, sep, name = container_name.partition("/")
    if sep and ns == namespace and name:
        return namespace, name
    if found.get(NAME_LABEL):
        return namespace, found[NAME_LABEL]
    return None
