"""IdentityIndex: the known identities, indexed so selectors do not scan them all.

Resolving one endpoint asks "which identities does this selector pick?" once per
selector in every rule that selects the endpoint. With thousands of identities and
rules a scan per question grows as rules x identities; a posting list per (key, value)
answers ``matchLabels`` selectors from the few candidates that carry the labels. Answers
are memoised, so the agent can build one index per identity change and reuse it for
every endpoint it regenerates.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping

from cilium_py.labels import (
    RESERVED_LABELS,
    IPNetwork,
    LabelSet,
    LabelSource,
    cidr_prefix,
    reserved_label,
)

from .cidr import CIDRRule
from .entities import Entity, entity_matches
from .rule import Section
from .selector import EndpointSelector

_WORLD_LABEL = reserved_label("world")
_WORLD_PREFIXES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

#: In policy keys, "any identity" (also identities allocated after resolving).
ANY_IDENTITY = 0


class IdentityIndex:
    """Identity number -> labels, with the reserved identities always present."""

    def __init__(self, identities: Mapping[int, LabelSet] | None = None) -> None:
        merged: dict[int, LabelSet] = {int(k): v for k, v in RESERVED_LABELS.items()}
        merged.update(identities or {})
        if ANY_IDENTITY in merged:
            raise ValueError("identity 0 means 'any identity' and cannot be allocated")
        self._labels = merged
        self._all = frozenset(merged)
        self._postings: dict[tuple[str, str], dict[LabelSource, set[int]]] = {}
        for identity, labels in merged.items():
            for label in labels:
                by_source = self._postings.setdefault((label.key, label.value), {})
                by_source.setdefault(label.source, set()).add(identity)
        self._memo: dict[Hashable, frozenset[int]] = {}
        # CIDR identities sorted by (version, first address): the ones inside a rule's
        # cidr are then one binary search away instead of a scan of every identity.
        self._cidr_sorted: list[tuple[int, int, int, int]] = []
        self._non_cidr_world: list[int] = []
        for identity, labels in merged.items():
            prefix = cidr_prefix(labels)
            if prefix is not None:
                self._cidr_sorted.append((prefix.version, int(prefix.network_address),
                                          prefix.prefixlen, identity))
            elif _WORLD_LABEL in labels:
                self._non_cidr_world.append(identity)
        self._cidr_sorted.sort()
        self._cidr_of: dict[int, IPNetwork] = {
            ident: ipaddress.ip_network((addr, plen)) if ver == 4
            else ipaddress.IPv6Network((addr, plen))
            for ver, addr, plen, ident in self._cidr_sorted
        }

    def cidr_select(self, rule: CIDRRule) -> frozenset[int]:
        """Identities a CIDR rule selects: prefixes inside the cidr and outside every
        except, plus world when the rule covers a whole address family."""
        key = ("cidr", rule)
        found = self._memo.get(key)
        if found is not None:
            return found
        cidr = rule.cidr
        lo = (cidr.version, int(cidr.network_address), -1, -1)
        hi = (cidr.version, int(cidr.broadcast_address), 1 << 16, 1 << 62)
        start = bisect.bisect_left(self._cidr_sorted, lo)
        end = bisect.bisect_right(self._cidr_sorted, hi)
        picked = set()
        for _ver, _addr, plen, ident in self._cidr_sorted[start:end]:
            if plen >= cidr.prefixlen and rule.selects_prefix(self._cidr_of[ident]):
                picked.add(ident)
        if cidr.prefixlen == 0 and any(rule.selects_prefix(p) for p in _WORLD_PREFIXES):
            picked.update(self._non_cidr_world)
        found = frozenset(picked)
        self._memo[key] = found
        return found

    def __iter__(self) -> Iterator[int]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, identity: object) -> bool:
        return identity in self._labels

    def labels(self, identity: int) -> LabelSet | None:
        return self._labels.get(identity)

    def items(self) -> Iterable[tuple[int, LabelSet]]:
        return self._labels.items()

    @property
    def all(self) -> frozenset[int]:
        return self._all

    def _where(self, key: Hashable, predicate: Callable[[LabelSet], bool]) -> frozenset[int]:
        found = self._memo.get(key)
        if found is None:
            found = frozenset(i for i, labels in self._labels.items() if predicate(labels))
            self._memo[key] = found
        return found

    def select(self, selector: EndpointSelector) -> frozenset[int]:
        """Known identities whose labels the selector matches."""
        key = ("selector", selector)
        found = self._memo.get(key)
        if found is not None:
            return found
        if not selector.match_labels:
            return self._where(key, selector.matches)
        candidates: set[int] | None = None
        for term in selector.match_labels:
            by_source = self._postings.get((term.key, term.value), {})
            if term.source is LabelSource.ANY:
                ids = set().union(*by_source.values()) if by_source else set()
            else:
                ids = by_source.get(term.source, set())
            candidates = ids if candidates is None else candidates & ids
            if not candidates:
                break
        found = frozenset(i for i in candidates or () if selector.matches(self._labels[i]))
        self._memo[key] = found
        return found

    def select_all(self, selectors: Iterable[EndpointSelector]) -> frozenset[int]:
        """Identities that every selector matches (all identities if there are none)."""
        result = self._all
        for selector in selectors:
            result = result & self.select(selector)
        return result

    def entity(self, entity: Entity) -> frozenset[int]:
        return self._where(("entity", entity), lambda labels: entity_matches(entity, labels))

    def section_peers(self, section: Section) -> frozenset[int]:
        """The identities a section allows (ports aside); ``{0}`` when it allows any."""
        if section.selects_any_peer():
            return frozenset({ANY_IDENTITY})
        peers: set[int] = set()
        for selector in section.endpoints:
            peers |= self.select(selector)
        for rule in section.cidr_rules():
            peers |= self.cidr_select(rule)
        for entity in section.entities:
            peers |= self.entity(entity)
        return frozenset(peers)
