"""Labels and reserved identities: the vocabulary that identities and policy speak.

Pure data: no store, no agent. See :mod:`.label` for parsing, :mod:`.labelset` for the
canonical identity key, :mod:`.reserved` for the fixed identity numbers and
:mod:`.cidr` for the labels of CIDR identities.
"""

from .cidr import IPNetwork, cidr_identity_labels, cidr_label, cidr_prefix
from .label import (
    RESERVED_NAMES,
    Label,
    LabelError,
    LabelParseError,
    LabelSource,
    parse_label,
    parse_select_label,
    split_source,
)
from .labelset import LabelSet
from .reserved import (
    IDENTITY_UNKNOWN,
    MIN_USER_IDENTITY,
    RESERVED_LABELS,
    ReservedIdentity,
    is_reserved,
    is_user,
    reserved_identity_of,
    reserved_label,
)

__all__ = [
    "IDENTITY_UNKNOWN",
    "IPNetwork",
    "MIN_USER_IDENTITY",
    "RESERVED_LABELS",
    "RESERVED_NAMES",
    "Label",
    "LabelError",
    "LabelParseError",
    "LabelSet",
    "LabelSource",
    "ReservedIdentity",
    "cidr_identity_labels",
    "cidr_label",
    "cidr_prefix",
    "is_reserved",
    "is_user",
    "parse_label",
    "parse_select_label",
    "reserved_identity_of",
    "reserved_label",
    "split_source",
]
