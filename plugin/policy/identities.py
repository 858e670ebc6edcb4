"""IdentityIndex: the known identities, indexed so selectors do not scan them all.

Resolving one endpoint asks "which identities does this selector pick?" once per
selector in every rule that selects the endpoint. With thousands of identities and
rules a scan per question grows as rules x identities; a posting list per (key, value)
answers ``matchLabels`` selectors from the few candidates that carry the labels. Answers
are memoised, so the agent can build one index per identity change and reuse it for
every endpoint it regenerates.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping

from cilium_py.labels import RESERVED_LABELS, LabelSet, LabelSource

from .entities import Entity, entity_matches
from .rule import Section
from .selector import EndpointSelector

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
            peers |= self._where(("cidr", rule), rule.selects)
        for entity in section.entities:
            peers |= self.entity(entity)
        return frozenset(peers)
