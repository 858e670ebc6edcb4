"""LabelSet: the sorted, immutable set of labels that an identity stands for.

The canonical string (``k8s:app=web;reserved:host``) is what the store keys identities
by, so two agents that see the same labels in any order must produce the same text:
labels are sorted by (source, key) and each (source, key) occurs at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .label import Label, LabelError, LabelParseError, LabelSource, parse_label, parse_select_label

SEPARATOR = ";"


class LabelSet:
    """An immutable, hashable, sorted set of :class:`Label` with at most one per key+source."""

    __slots__ = ("_labels", "_hash", "_by_key")

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        seen: dict[tuple[str, str], Label] = {}
        for label in labels:
            if not isinstance(label, Label):
                raise TypeError(f"LabelSet holds Label objects, not {type(label).__name__}")
            slot = (label.source, label.key)
            previous = seen.get(slot)
            if previous is not None and previous != label:
                raise LabelError(
                    str(label), f"conflicts with {previous} (one value per source and key)"
                )
            seen[slot] = label
        self._labels: tuple[Label, ...] = tuple(sorted(seen.values()))
        self._hash = hash(self._labels)
        # key -> labels with that key, built on first selector match.
        self._by_key: dict[str, tuple[Label, ...]] | None = None

    # -- construction ----------------------------------------------------------------

    @classmethod
    def parse(cls, items: Iterable[str], *, selector: bool = False) -> LabelSet:
        """Parse label strings; bare labels get source ``unspec`` (``any`` if ``selector``)."""
        if isinstance(items, str):
            raise TypeError("LabelSet.parse takes an iterable of strings, not one string")
        parser = parse_select_label if selector else parse_label
        return cls(parser(item) for item in items)

    @classmethod
    def from_canonical(cls, text: str) -> LabelSet:
        """Inverse of :meth:`canonical`; the empty string is the empty set."""
        if not text:
            return cls()
        return cls(parse_label(part) for part in text.split(SEPARATOR))

    @classmethod
    def from_dicts(cls, items: Iterable[Mapping[str, Any]]) -> LabelSet:
        """Build from ``[{"key", "value", "source"}]`` (source defaults to ``unspec``)."""
        labels = []
        for item in items:
            source = item.get("source") or LabelSource.UNSPEC
            key = item.get("key", "")
            value = item.get("value") or ""
            text = f"{source}:{key}={value}"
            if not isinstance(key, str) or not isinstance(value, str):
                raise LabelParseError(text, "key and value must be strings")
            try:
                labels.append(Label(source, key, value))
            except LabelError as exc:
                raise LabelParseError(text, exc.reason) from None
        return cls(labels)

    # -- the set protocol --------------------------------------------------------------

    def __iter__(self) -> Iterator[Label]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item: object) -> bool:
        return item in self._labels

    def __bool__(self) -> bool:
        return bool(self._labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSet):
            return NotImplemented
        return self._labels == other._labels

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: LabelSet) -> bool:
        return self._labels < other._labels

    def __or__(self, other: LabelSet) -> LabelSet:
        return LabelSet((*self._labels, *other._labels))

    def __repr__(self) -> str:
        return f"LabelSet({self.canonical()!r})"

    def __str__(self) -> str:
        return self.canonical()

    # -- queries ---------------------------------------------------------------------

    def canonical(self) -> str:
        """The store's identity key: sorted ``source:key[=value]`` joined by ``;``."""
        return SEPARATOR.join(str(label) for label in self._labels)

    def strings(self) -> list[str]:
        """Labels as ``source:key[=value]`` strings, sorted."""
        return [str(label) for label in self._labels]

    def to_dicts(self) -> list[dict[str, str]]:
        """The ``[{"key", "value", "source"}]`` form of policy rule labels."""
        return [label.to_dict() for label in self._labels]

    def with_key(self, key: str, source: LabelSource = LabelSource.ANY) -> tuple[Label, ...]:
        """Labels with ``key``; restricted to ``source`` unless it is ``any``."""
        if self._by_key is None:
            index: dict[str, list[Label]] = {}
            for label in self._labels:
                index.setdefault(label.key, []).append(label)
            self._by_key = {k: tuple(v) for k, v in index.items()}
        found = self._by_key.get(key, ())
        if source is LabelSource.ANY:
            return found
        return tuple(label for label in found if label.source == source)

    def has(self, term: Label) -> bool:
        """True when some label satisfies the selector term (``any`` matches all sources)."""
        return any(term.matches(label) for label in self.with_key(term.key, term.source))

    def contains_all(self, terms: Iterable[Label]) -> bool:
        """True when every term is satisfied; terms of source ``any`` ignore sources."""
        return all(self.has(term) for term in terms)

    def by_source(self, source: LabelSource) -> LabelSet:
        """The labels of one source."""
        return LabelSet(label for label in self._labels if label.source == source)
