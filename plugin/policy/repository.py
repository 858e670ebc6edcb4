"""The in-memory policy repository: the ordered rule list and its revision.

As in Cilium 1.0, importing appends (rules with equal labels do not replace each
other); deleting removes every rule whose labels include all the given ones. Every
change bumps the revision, which endpoints report once they run it (``policy wait``).
Rule indices (used by ``policy trace``) are positions in the current list.

Persisting the rules is the agent's job: :meth:`Repository.to_json` and
:meth:`Repository.add_json` are the two ends it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cilium_py.labels import Label, LabelSet

from .rule import Rule
from .schema import parse_policy


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What a delete did: rules removed and the revision afterwards."""

    deleted: int
    revision: int


def labels_match(rule_labels: LabelSet, query: Iterable[Label]) -> bool:
    """True when ``rule_labels`` satisfy every query label (source ``any`` = any source)."""
    return rule_labels.contains_all(query)


class Repository:
    """Thread-safe list of rules with a monotonically increasing revision."""

    def __init__(self, revision: int = 1) -> None:
        # Starts at 1 so that "wait for revision 1" is already satisfied when empty;
        # an agent restoring state passes the revision it had.
        self._lock = threading.Lock()
        self._rules: tuple[Rule, ...] = ()
        self._revision = revision

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def rules(self) -> tuple[Rule, ...]:
        """A snapshot: immutable, safe to resolve against while others change the list."""
        return self._rules

    def snapshot(self) -> tuple[tuple[Rule, ...], int]:
        """Rules and revision read together, for resolving a consistent state."""
        with self._lock:
            return self._rules, self._revision

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rules: Sequence[Rule]) -> int:
        """Append already-validated rules; returns the new revision."""
        with self._lock:
            self._rules = (*self._rules, *rules)
            self._revision += 1
            return self._revision

    def add_json(self, document: Any) -> int:
        """Validate a policy document and append it whole (PolicyValidationError if not)."""
        return self.add(parse_policy(document))

    def replace_all(self, rules: Sequence[Rule]) -> int:
        """Swap the whole list (e.g. restoring from the store); bumps the revision."""
        with self._lock:
            self._rules = tuple(rules)
            self._revision += 1
            return self._revision

    def delete(self, labels: Iterable[Label] = ()) -> DeleteResult:
        """Remove rules whose labels include all ``labels``; no labels removes all.

        The revision only moves when something was removed, so the API can answer
        "not found" without endpoints regenerating for nothing.
        """
        query = tuple(labels)
        with self._lock:
            kept = tuple(r for r in self._rules if not labels_match(r.labels, query))
            deleted = len(self._rules) - len(kept)
            if deleted:
                self._rules = kept
                self._revision += 1
            return DeleteResult(deleted, self._revision)

    def delete_all(self) -> DeleteResult:
        return self.delete(())

    def search(self, labels: Iterable[Label] = ()) -> list[tuple[int, Rule]]:
        """(index, rule) for rules whose labels include all ``labels`` (all if none)."""
        query = tuple(labels)
        return [(i, r) for i, r in enumerate(self._rules) if labels_match(r.labels, query)]

    def to_json(self, labels: Iterable[Label] = ()) -> list[dict[str, Any]]:
        """The (filtered) rules as a Cilium policy document."""
        return [rule.to_dict() for _, rule in self.search(labels)]
