"""Labels and names from what runtimes pass besides the netns: CNI_ARGS and ``args``.

Pure functions over strings and dicts. Kubernetes passes pod coordinates in the
``CNI_ARGS`` environment variable; Mesos injects ``args["org.apache.mesos"]`` into the
network config; the CNI labels convention puts ``args.cni.labels`` there. All of them
end up as source-prefixed endpoint labels (``k8s:``, ``mesos:``, ``container:``) from
which the agent derives the endpoint's security identity, so a label we cannot read is
an error rather than silently dropped: a missing label could leave a workload outside
the policy written for it.
"""

from __future__ import annotations

from .errors import INVALID_ENV, INVALID_NETWORK_CONFIG, CNIError

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

K8S_NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"
MESOS_ARGS_KEY = "org.apache.mesos"

# Sources a runtime may name itself in ``args.cni.labels`` keys (never ``reserved``:
# those identities belong to the agent).
_RUNTIME_SOURCES = ("container", "k8s", "mesos", "unspec")
_TRUE = ("1", "true", "yes")


def parse_cni_args(text: str | None) -> dict[str, str]:
    """Parse ``CNI_ARGS`` (``K=V;K2=V2``) leniently.

    Keys come in any order, empty segments are skipped, a value may itself contain
    ``=``, unknown keys are kept (callers use what they know). A segment without ``=``
    is an error (code 4) unless ``IgnoreUnknown`` is true, which kubelet always sets.
    """
    pairs: dict[str, str] = {}
    bad: list[str] = []
    for segment in (text or "").split(";"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        if not sep or not key:
            bad.append(segment)
            continue
        pairs[key.strip()] = value.strip()
    if bad and pairs.get("IgnoreUnknown", "").lower() not in _TRUE:
        raise CNIError(INVALID_ENV, "CNI_ARGS: invalid pair " + repr(bad[0]),
                       "CNI_ARGS is a ';'-separated list of KEY=VALUE pairs")
    return pairs


def k8s_labels(cni_args: dict[str, str]) -> list[str]:
    """``K8S_POD_NAMESPACE`` -> the namespace label Cilium policies select on.

    The pod name is not a label: identities come from labels, and a label unique to
    every pod would give every replica its own identity (Cilium leaves it out too). It
    travels as endpoint metadata instead, in ``container-name`` (see
    :func:`container_name`), which is also where the agent finds the pod to look up.
    """
    if cni_args.get("K8S_POD_NAMESPACE"):
        return [f"{K8S_NAMESPACE_LABEL}={cni_args['K8S_POD_NAMESPACE']}"]
    return []


def _key_value_list(items: Any, where: str) -> list[tuple[str, str]]:
    """``[{"key": k, "value": v}, ...]`` -> pairs; anything else is code 7."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise CNIError(INVALID_NETWORK_CONFIG, f"{where} must be a list of {{key, value}}")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) \
                or not item["key"] or not isinstance(item.get("value", ""), str):
            raise CNIError(INVALID_NETWORK_CONFIG,
                           f"{where}[{i}] must be {{\"key\": string, \"value\": string}}",
                           f"got {item!r}")
        key = item["key"]
        # "a=b" with value "c" would read back as key "a" (and ";" splits a label list):
        # refuse such keys rather than label the workload with something else.
        bad = next((c for c in key if c in "=;" or c.isspace()), None)
        if bad is not None:
            raise CNIError(INVALID_NETWORK_CONFIG,
                           f"{where}[{i}]: label key {key!r} must not contain {bad!r}",
                           "label keys hold no '=', ';' or whitespace")
        pairs.append((key, item.get("value", "")))
    return pairs


def _label(source: str, key: str, value: str) -> str:
    return f"{source}:{key}={value}" if value else f"{source}:{key}"


def cni_labels(conf_args: dict[str, Any]) -> list[str]:
    """``args.cni.labels`` (CNI conventions) -> ``container:key=value``.

    A key that already names a runtime source (``k8s:app``) keeps it.
    """
    cni = conf_args.get("cni")
    if not isinstance(cni, dict):
        return []
    labels = []
    for key, value in _key_value_list(cni.get("labels"), "args.cni.labels"):
        source, sep, rest = key.partition(":")
        if sep and source in _RUNTIME_SOURCES and rest:
            labels.append(_label(source, rest, value))
        else:
            labels.append(_label("container", key, value))
    return labels


def mesos_network_info(conf_args: dict[str, Any]) -> dict[str, Any]:
    """``args["org.apache.mesos"]["network_info"]``, or ``{}`` when not run by Mesos."""
    mesos = conf_args.get(MESOS_ARGS_KEY)
    if mesos is None:
        return {}
    info = mesos.get("network_info") if isinstance(mesos, dict) else None
    if not isinstance(info, dict):
        raise CNIError(INVALID_NETWORK_CONFIG,
                       f"args[{MESOS_ARGS_KEY!r}] must hold a network_info object")
    return info


def mesos_labels(conf_args: dict[str, Any]) -> list[str]:
    """NetworkInfo labels (``labels.labels[{key, value}]``) -> ``mesos:key=value``."""
    labels = mesos_network_info(conf_args).get("labels")
    if labels is None:
        return []
    if not isinstance(labels, dict):
        raise CNIError(INVALID_NETWORK_CONFIG,
                       "network_info.labels must be {\"labels\": [{key, value}]}")
    where = f"args[{MESOS_ARGS_KEY!r}].network_info.labels.labels"
    return [_label("mesos", k, v) for k, v in _key_value_list(labels.get("labels"), where)]


def endpoint_labels(cni_args: dict[str, str], conf_args: dict[str, Any]) -> list[str]:
    """All labels for the endpoint, first occurrence wins, order kept for stable logs."""
    seen: dict[str, None] = {}
    for label in (*k8s_labels(cni_args), *cni_labels(conf_args), *mesos_labels(conf_args)):
        seen.setdefault(label, None)
    return list(seen)


def container_name(cni_args: dict[str, str]) -> str:
    """A human name for ``cilium-py endpoint list``: ``namespace/pod`` under Kubernetes."""
    ns, pod = cni_args.get("K8S_POD_NAMESPACE", ""), cni_args.get("K8S_POD_NAME", "")
    if ns and pod:
        return f"{ns}/{pod}"
    return pod
