"""Labels of CIDR identities.

Addresses outside the cluster have no labels of their own. To let a CIDR rule select
them, the agent gives each prefix a rule names an identity whose labels are
``cidr:<prefix>`` plus ``reserved:world`` (they are outside, so ``world`` selects them
too). Policy code reads the prefix back with :func:`cidr_prefix`.
"""

from __future__ import annotations

import ipaddress

from .label import Label, LabelSource
from .labelset import LabelSet
from .reserved import reserved_label

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def cidr_label(prefix: IPNetwork | str) -> Label:
    """``cidr:<prefix>``; host bits are cleared."""
    return Label(LabelSource.CIDR, str(prefix))


def cidr_identity_labels(prefix: IPNetwork | str) -> LabelSet:
    """The label set of the identity for ``prefix``: its cidr label and ``reserved:world``."""
    return LabelSet([cidr_label(prefix), reserved_label("world")])


def cidr_prefix(labels: LabelSet) -> IPNetwork | None:
    """The most specific ``cidr:`` prefix in ``labels``, or None for a non-CIDR identity.

    The longest prefix wins so that a set carrying its enclosing prefixes as well (as
    Cilium's CIDR identities do) still names the one prefix it stands for.
    """
    best: IPNetwork | None = None
    for label in labels:
        if label.source is LabelSource.CIDR:
            net = ipaddress.ip_network(label.key)
            if best is None or net.prefixlen > best.prefixlen:
                best = net
    return best
