"""Per-node endpoint ranges carved out of the cluster's pools.

Every node hands out addresses from its own range, so two nodes never give out the same
address and a packet's destination tells which node holds it (one route or tunnel entry
per node, not per endpoint). A range is claimed by creating its key in the shared store
(create-if-absent); the claim names the node and outlives it, so a node that restarts
gets its range back and the endpoints it restores keep their addresses.
"""

from __future__ import annotations

import ipaddress
import json

from ..errors import InvalidInput, PoolExhausted
from ..store import Store

RANGES_PREFIX = "cilium-py/cluster/ranges/"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _family_key(family: int) -> str:
    return f"{RANGES_PREFIX}ipv{family}/"


def subnet_key(family: int, subnet: IPNetwork) -> str:
    return _family_key(family) + str(subnet).replace("/", "_")


def parse_cluster_range(text: str, family: int, node_prefix_len: int) -> IPNetwork:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid IPv{family} cluster range {text!r}: {exc}") from exc
    if net.version != family:
        raise InvalidInput(f"cluster range {text!r} is not an IPv{family} prefix")
    if not net.prefixlen <= node_prefix_len <= net.max_prefixlen - 2:
        raise InvalidInput(
            f"per-node /{node_prefix_len} does not fit cluster range {text!r}"
        )
    return net


def claim_node_range(
    store: Store, node: str, cluster: IPNetwork, node_prefix_len: int
) -> IPNetwork:
    """The range of ``node`` in ``cluster``: the one it holds already, else the first
    free one. Safe against concurrent claims: the store's create decides."""
    family = cluster.version
    for kv in store.list(_family_key(family)):
        doc = json.loads(kv.value)
        if doc.get("node") == node:
            subnet = ipaddress.ip_network(doc["range"])
            if subnet.subnet_of(cluster):  # type: ignore[arg-type]
                return subnet
    record = lambda subnet: json.dumps({"node": node, "range": str(subnet)}).encode()  # noqa: E731
    for subnet in cluster.subnets(new_prefix=node_prefix_len):
        if store.create(subnet_key(family, subnet), record(subnet)):
            return subnet
    raise PoolExhausted(
        f"no free /{node_prefix_len} left in cluster range {cluster} for node {node}"
    )


def node_ranges(store: Store, family: int) -> dict[str, str]:
    """Every claimed range of ``family``: range -> node name."""
    out = {}
    for kv in store.list(_family_key(family)):
        doc = json.loads(kv.value)
        out[doc["range"]] = doc["node"]
    return out


def release_node_range(store: Store, node: str) -> int:
    """Forget every range ``node`` holds (``cilium-py node delete``); returns how many."""
    released = 0
    for family in (4, 6):
        for kv in store.list(_family_key(family)):
            if json.loads(kv.value).get("node") == node and store.compare_and_swap(
                kv.key, kv.mod_revision, None
            ):
                released += 1
    return released
