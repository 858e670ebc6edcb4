"""Endpoint selectors: which label sets a rule applies to or allows.

The Kubernetes LabelSelector shape (``matchLabels`` and ``matchExpressions``) with
Cilium's source-aware keys: a bare key (``app``) matches that key from any source, a
prefixed key (``k8s:app``, ``reserved:host``) only from that source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cilium_py.labels import Label, LabelError, LabelSet, LabelSource, split_source


class Operator(StrEnum):
    """matchExpressions operators."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


def parse_selector_key(text: str) -> tuple[LabelSource, str]:
    """``k8s:app`` -> (k8s, app); ``app`` -> (any, app). Raises LabelError."""
    source_text, key = split_source(text)
    try:
        # Building a Label checks the source, the key and reserved names in one place.
        label = Label(source_text or LabelSource.ANY, key)
    except LabelError as exc:
        raise LabelError(text, exc.reason) from None
    return label.source, label.key


def format_selector_key(source: LabelSource, key: str) -> str:
    """Inverse of :func:`parse_selector_key`; ``any`` is written as a bare key."""
    return key if source is LabelSource.ANY else f"{source}:{key}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    source: LabelSource
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: LabelSet) -> bool:
        present = labels.with_key(self.key, self.source)
        if self.operator is Operator.EXISTS:
            return bool(present)
        if self.operator is Operator.DOES_NOT_EXIST:
            return not present
        hit = any(label.value in self.values for label in present)
        return hit if self.operator is Operator.IN else not hit

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": format_selector_key(self.source, self.key),
            "operator": str(self.operator),
        }
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True, slots=True)
class EndpointSelector:
    """A label selector; all terms must hold. The empty selector selects everything."""

    match_labels: tuple[Label, ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @classmethod
    def build(
        cls,
        match_labels: Mapping[str, str] | None = None,
        match_expressions: Iterable[Requirement] = (),
    ) -> EndpointSelector:
        """From ``{"key": "value"}`` with source-aware keys (raises LabelError)."""
        terms = []
        for key_text, value in (match_labels or {}).items():
            source, key = parse_selector_key(key_text)
            try:
                terms.append(Label(source, key, value))
            except LabelError as exc:
                raise LabelError(f"{key_text}={value}", exc.reason) from None
        return cls(tuple(sorted(terms)), tuple(match_expressions))

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> EndpointSelector:
        """A selector requiring each ``[source:]key[=value]`` (bare keys: any source)."""
        return cls(tuple(sorted(LabelSet.parse(labels, selector=True))))

    def is_wildcard(self) -> bool:
        """True for ``{}``, which selects every label set (even ones not known yet)."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: LabelSet) -> bool:
        return all(labels.has(term) for term in self.match_labels) and all(
            req.matches(labels) for req in self.match_expressions
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = {
                format_selector_key(t.source, t.key): t.value for t in self.match_labels
            }
        if self.match_expressions:
            out["matchExpressions"] = [req.to_dict() for req in self.match_expressions]
        return out

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
