"""Reserved identities: fixed numbers for label sets every agent knows without the store.

Their numbers are part of the datapath contract (the BPF programs compare against them),
so they are constants here rather than allocations. User identities, allocated in the
store, start at :data:`MIN_USER_IDENTITY`.
"""

from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType

from .label import Label, LabelSource
from .labelset import LabelSet


class ReservedIdentity(IntEnum):
    """The fixed identity numbers, as in Cilium."""

    HOST = 1
    WORLD = 2
    CLUSTER = 3
    HEALTH = 4
    # An endpoint whose labels are not known yet: it must not inherit anyone's access.
    INIT = 5
    # Another node of the cluster itself (its host stack, not its endpoints).
    REMOTE_NODE = 6


#: Identity 0 never names a peer; policy keys use it as "any identity".
IDENTITY_UNKNOWN = 0
#: The first identity the store may allocate for a user label set.
MIN_USER_IDENTITY = 256


def reserved_label(name: str) -> Label:
    """``reserved:<name>``."""
    return Label(LabelSource.RESERVED, name)


#: ``reserved:<name>`` for each reserved identity.
RESERVED_LABELS: MappingProxyType[ReservedIdentity, LabelSet] = MappingProxyType(
    {ident: LabelSet([reserved_label(ident.name.lower().replace("_", "-"))])
     for ident in ReservedIdentity}
)

_BY_LABELS = {labels: ident for ident, labels in RESERVED_LABELS.items()}


def reserved_identity_of(labels: LabelSet) -> ReservedIdentity | None:
    """The reserved identity whose label set is exactly ``labels``, if any."""
    return _BY_LABELS.get(labels)


def is_reserved(identity: int) -> bool:
    """True for the fixed identity numbers 1-6."""
    return identity in ReservedIdentity._value2member_map_


def is_user(identity: int) -> bool:
    """True for store-allocated identities."""
    return identity >= MIN_USER_IDENTITY
