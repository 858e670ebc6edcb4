"""Policy map entries: a resolved policy turned into ``cpy_policy`` keys and values.

Pure (no kernel): the writer in ``tables.py`` diffs what these functions produce
against what the map holds. The layout is ``bpf/lib/policy.h``'s:

    {ep_id, identity, dport (network order), protocol, direction}
        -> {proxy_port (host order), action}

identity, port and protocol 0 mean "any". Besides the entries, an endpoint's flags
word (``cpy_ep_cfg`` and ``cpy_lxc``) carries a policy summary: whether each
direction is enforced, and which of the six key shapes its entries use, so that the
programs only look up shapes that can hit (an L3-only or L4-only policy costs one
hash lookup per new connection instead of six).

The resolved policy is read by duck typing (``.ingress``/``.egress`` with
``.enforced`` and ``.entries`` mapping keys with ``identity``/``port``/``protocol``
to verdicts with ``action`` and optionally ``proxy_port``), so the datapath does not
depend on the policy engine's classes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .maps import (
    EP_F_EGRESS_ENFORCED,
    EP_F_INGRESS_ENFORCED,
    EP_SHAPES_EGRESS_SHIFT,
    EP_SHAPES_INGRESS_SHIFT,
    POLICY_ACTION_ALLOW,
    POLICY_ACTION_REDIRECT,
    POLICY_EGRESS,
    POLICY_INGRESS,
    PolicyKey,
    PolicyValue,
    htons,
    ntohs,
)

log = logging.getLogger("cilium_py.datapath")

# Key shapes, in the order the programs look them up (bpf/lib/policy.h).
SHAPE_ID_PORT_PROTO = 0x01
SHAPE_ID_PORT = 0x02
SHAPE_ID = 0x04
SHAPE_PORT_PROTO = 0x08
SHAPE_PORT = 0x10
SHAPE_ANY = 0x20

DIRECTIONS = {"ingress": POLICY_INGRESS, "egress": POLICY_EGRESS}
DIRECTION_NAMES = {v: k for k, v in DIRECTIONS.items()}
ACTIONS = {"allow": POLICY_ACTION_ALLOW, "redirect": POLICY_ACTION_REDIRECT}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}
PROTOCOL_NAMES = {0: "ANY", 6: "TCP", 17: "UDP"}


@dataclass(frozen=True, order=True)
class Entry:
    """One policy map entry for one endpoint, in host byte order."""

    direction: int  # POLICY_INGRESS / POLICY_EGRESS
    identity: int
    port: int
    protocol: int
    action: int = POLICY_ACTION_ALLOW
    proxy_port: int = 0

    @property
    def shape(self) -> int | None:
        """The lookup this key answers, or None when no lookup ever tries it
        (a protocol without a port)."""
        if self.port == 0 and self.protocol != 0:
            return None
        if self.port == 0:
            shape = SHAPE_ANY
        elif self.protocol == 0:
            shape = SHAPE_PORT
        else:
            shape = SHAPE_PORT_PROTO
        # The identity-specific shapes are the any-identity ones shifted down by 3.
        return shape >> 3 if self.identity else shape

    def key(self, ep_id: int) -> PolicyKey:
        return PolicyKey(ep_id=ep_id, identity=self.identity, dport=htons(self.port),
                         protocol=self.protocol, direction=self.direction)

    def value(self) -> PolicyValue:
        return PolicyValue(proxy_port=self.proxy_port, action=self.action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": DIRECTION_NAMES.get(self.direction, str(self.direction)),
            "identity": self.identity,
            "port": self.port,
            "protocol": PROTOCOL_NAMES.get(self.protocol, str(self.protocol)),
            "action": ACTION_NAMES.get(self.action, str(self.action)),
            "proxy_port": self.proxy_port,
        }


def entry_from_map(key: PolicyKey, value: PolicyValue) -> Entry:
    return Entry(direction=int(key.direction), identity=int(key.identity),
                 port=ntohs(key.dport), protocol=int(key.protocol),
                 action=int(value.action), proxy_port=int(value.proxy_port))


def _check(entry: Entry) -> Entry:
    if not 0 <= entry.identity < 2**32:
        raise ValueError(f"identity out of range: {entry.identity}")
    if not 0 <= entry.port <= 65535 or not 0 <= entry.protocol <= 255:
        raise ValueError(f"port/protocol out of range: {entry.port}/{entry.protocol}")
    if not 0 <= entry.proxy_port <= 65535:
        raise ValueError(f"proxy port out of range: {entry.proxy_port}")
    return entry


def direction_entries(direction: int, policy: Any) -> list[Entry]:
    """The entries of one ``DirectionPolicy``-like object (none when not enforced:
    the programs do not look at them then)."""
    if not policy.enforced:
        return []
    out = []
    for key, verdict in policy.entries.items():
        action = ACTIONS[str(getattr(verdict.action, "value", verdict.action))]
        proxy_port = int(getattr(verdict, "proxy_port", 0) or 0)
        entry = _check(Entry(direction=direction, identity=int(key.identity),
                             port=int(key.port), protocol=int(key.protocol),
                             action=action,
                             proxy_port=proxy_port if action == POLICY_ACTION_REDIRECT else 0))
        if entry.shape is None:
            log.warning("policy entry %s has a protocol but no port: no lookup can hit it, "
                        "skipped", entry)
            continue
        out.append(entry)
    return out


def resolved_entries(resolved: Any) -> list[Entry]:
    """Both directions of a ``ResolvedPolicy``-like object."""
    return (direction_entries(POLICY_INGRESS, resolved.ingress)
            + direction_entries(POLICY_EGRESS, resolved.egress))


def policy_flags(enforced_ingress: bool, enforced_egress: bool,
                 entries: Iterable[Entry]) -> int:
    """The policy part of an endpoint's flags word (``EP_POLICY_FLAGS_MASK``)."""
    flags = (EP_F_INGRESS_ENFORCED if enforced_ingress else 0) | (
        EP_F_EGRESS_ENFORCED if enforced_egress else 0)
    for entry in entries:
        shape = entry.shape or 0
        shift = EP_SHAPES_INGRESS_SHIFT if entry.direction == POLICY_INGRESS else \
            EP_SHAPES_EGRESS_SHIFT
        flags |= shape << shift
    return flags


def resolved_flags(resolved: Any, entries: Iterable[Entry]) -> int:
    return policy_flags(bool(resolved.ingress.enforced), bool(resolved.egress.enforced),
                        entries)


def flags_dict(flags: int) -> dict[str, bool]:
    return {
        "ingress_enforced": bool(flags & EP_F_INGRESS_ENFORCED),
        "egress_enforced": bool(flags & EP_F_EGRESS_ENFORCED),
    }


@dataclass(frozen=True)
class Diff:
    """What brings a map's entries for one endpoint to the wanted set."""

    write: dict[bytes, Entry]  # new or changed, by packed key
    delete: list[bytes]
    added: int
    changed: int

    @property
    def empty(self) -> bool:
        return not self.write and not self.delete


def diff_entries(ep_id: int, current: Mapping[bytes, Entry], wanted: Iterable[Entry]) -> Diff:
    """Compare by packed key; an entry whose value differs is rewritten in place."""
    want = {bytes(e.key(ep_id)): e for e in wanted}
    write: dict[bytes, Entry] = {}
    added = changed = 0
    for packed, entry in want.items():
        have = current.get(packed)
        if have is None:
            added += 1
            write[packed] = entry
        elif have != entry:
            changed += 1
            write[packed] = entry
    delete = [packed for packed in current if packed not in want]
    return Diff(write=write, delete=delete, added=added, changed=changed)
