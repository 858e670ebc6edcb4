"""CNI_ARGS, args.cni.labels and Mesos NetworkInfo labels -> endpoint labels."""

from __future__ import annotations

import pytest

from cilium_py.cni import args
from cilium_py.cni.errors import INVALID_ENV, INVALID_NETWORK_CONFIG, CNIError

KUBELET = ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
           "K8S_POD_INFRA_CONTAINER_ID=3f69;K8S_POD_UID=1c1e-22")


def test_kubelet_args_parse_in_any_order() -> None:
    parsed = args.parse_cni_args(KUBELET)
    assert parsed["K8S_POD_NAMESPACE"] == "default"
    assert parsed["K8S_POD_NAME"] == "web-0"
    shuffled = ";".join(reversed(KUBELET.split(";")))
    assert args.parse_cni_args(shuffled) == parsed


@pytest.mark.parametrize("text,expected", [
    ("", {}),
    (None, {}),
    (";;K=V;", {"K": "V"}),
    ("K=a=b", {"K": "a=b"}),
    (" K = V ", {"K": "V"}),
    ("UNKNOWN=1;K8S_POD_NAME=x", {"UNKNOWN": "1", "K8S_POD_NAME": "x"}),
    ("IgnoreUnknown=true;junk;K8S_POD_NAME=x",
     {"IgnoreUnknown": "true", "K8S_POD_NAME": "x"}),
])
def test_lenient_parsing(text: str | None, expected: dict[str, str]) -> None:
    assert args.parse_cni_args(text) == expected


@pytest.mark.parametrize("text", ["junk", "K=V;junk", "=V", "IgnoreUnknown=0;junk"])
def test_malformed_pairs_without_ignore_unknown_are_code_4(text: str) -> None:
    with pytest.raises(CNIError) as exc:
        args.parse_cni_args(text)
    assert exc.value.code == INVALID_ENV


def test_k8s_labels() -> None:
    # Only the namespace: a pod-name label would give every replica its own identity
    # (issue 11 item 15); the name is endpoint metadata (container-name).
    assert args.k8s_labels(args.parse_cni_args(KUBELET)) == [
        "k8s:io.kubernetes.pod.namespace=default",
    ]
    assert args.k8s_labels({}) == []
    assert args.container_name(args.parse_cni_args(KUBELET)) == "default/web-0"
    assert args.container_name({}) == ""


def test_cni_labels_convention() -> None:
    conf_args = {"cni": {"labels": [{"key": "app", "value": "web"},
                                    {"key": "k8s:tier", "value": "front"},
                                    {"key": "reserved:host", "value": ""},
                                    {"key": "flag"}]}}
    assert args.cni_labels(conf_args) == [
        "container:app=web", "k8s:tier=front", "container:reserved:host", "container:flag"]
    assert args.cni_labels({}) == []
    assert args.cni_labels({"cni": "not a dict"}) == []


def mesos_args(labels: object) -> dict[str, object]:
    return {"org.apache.mesos": {"network_info": {
        "name": "cilium-py", "labels": labels,
        "port_mappings": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}]}}}


def test_mesos_network_info_labels() -> None:
    conf_args = mesos_args({"labels": [{"key": "app", "value": "web"},
                                       {"key": "group", "value": "frontend"}]})
    assert args.mesos_labels(conf_args) == ["mesos:app=web", "mesos:group=frontend"]
    assert args.mesos_labels({}) == []
    assert args.mesos_labels(mesos_args(None)) == []
    assert args.mesos_labels(mesos_args({})) == []


@pytest.mark.parametrize("bad", [
    {"org.apache.mesos": "x"},
    {"org.apache.mesos": {"network_info": []}},
    mesos_args([{"key": "app", "value": "web"}]),
    mesos_args({"labels": {"app": "web"}}),
    mesos_args({"labels": [{"value": "web"}]}),
    mesos_args({"labels": [{"key": "app", "value": 3}]}),
    {"cni": {"labels": "app=web"}},
    # A key holding '=' would read back as another key (issue 11 item 16).
    mesos_args({"labels": [{"key": "a=b", "value": "c"}]}),
    mesos_args({"labels": [{"key": "a b", "value": "c"}]}),
    mesos_args({"labels": [{"key": "a;b", "value": "c"}]}),
    {"cni": {"labels": [{"key": "a=b", "value": "c"}]}},
])
def test_unreadable_labels_are_code_7_not_silently_dropped(bad: dict) -> None:
    with pytest.raises(CNIError) as exc:
        args.endpoint_labels({}, bad)
    assert exc.value.code == INVALID_NETWORK_CONFIG


def test_endpoint_labels_merge_sources_without_duplicates() -> None:
    conf_args = {**mesos_args({"labels": [{"key": "app", "value": "web"},
                                          {"key": "app", "value": "web"}]}),
                 "cni": {"labels": [{"key": "team", "value": "a"}]}}
    assert args.endpoint_labels({"K8S_POD_NAMESPACE": "ns"}, conf_args) == [
        "k8s:io.kubernetes.pod.namespace=ns", "container:team=a", "mesos:app=web"]
