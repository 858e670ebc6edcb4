"""Entities (``fromEntities``/``toEntities``): names for peers that have no labels to select.

Each entity is a predicate over an identity's labels, so the resolver (over every known
identity) and the tracer (over the labels a user typed) agree by construction:

- ``all``: anything, including identities allocated later (resolved as "any identity");
- ``host``: ``reserved:host``;
- ``world``: ``reserved:world`` and CIDR identities (outside addresses);
- ``cluster``: ``reserved:cluster`` and every identity that is neither host nor world,
  i.e. endpoints' identities, ``health`` and ``init``;
- ``health``/``init``/``remote-node``: their reserved identities (``remote-node``: the
  other nodes of the cluster themselves, not their endpoints).
"""

from __future__ import annotations

from enum import StrEnum

from cilium_py.labels import LabelSet, LabelSource, reserved_label


class Entity(StrEnum):
    ALL = "all"
    WORLD = "world"
    CLUSTER = "cluster"
    HOST = "host"
    INIT = "init"
    HEALTH = "health"
    REMOTE_NODE = "remote-node"


_HOST = reserved_label("host")
_WORLD = reserved_label("world")


def is_world(labels: LabelSet) -> bool:
    """Outside the cluster: ``reserved:world`` or a CIDR identity."""
    return _WORLD in labels or bool(labels.by_source(LabelSource.CIDR))


def entity_matches(entity: Entity, labels: LabelSet) -> bool:
    """Whether an identity with ``labels`` belongs to ``entity``."""
    if entity is Entity.ALL:
        return True
    if entity is Entity.WORLD:
        return is_world(labels)
    if entity is Entity.CLUSTER:
        return _HOST not in labels and not is_world(labels)
    return reserved_label(entity.value) in labels
