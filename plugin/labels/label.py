"""One label: a (source, key, value) triple, and the two ways text becomes one.

A label's source says who vouches for it (the container runtime, Kubernetes, Mesos, the
agent itself). Two parsers exist because the same text means different things in two
places, as in Cilium: on an endpoint a bare ``app=web`` is a label of unknown origin
(source ``unspec``); in a selector a bare ``app=web`` means "``app=web`` from any source"
(source ``any``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum


class LabelSource(StrEnum):
    """Where a label comes from; the text before the first ``:``."""

    CONTAINER = "container"
    K8S = "k8s"
    MESOS = "mesos"
    RESERVED = "reserved"
    UNSPEC = "unspec"
    # CIDR identities carry ``cidr:<prefix>`` so that CIDR rules can select them.
    CIDR = "cidr"
    # Only meaningful in selectors: matches a key from any of the sources above.
    ANY = "any"


# Names allowed after ``reserved:``; each is one of the fixed identities.
RESERVED_NAMES: frozenset[str] = frozenset(
    {"host", "world", "cluster", "health", "init", "remote-node"}
)

_FORBIDDEN_IN_KEY = ("=", ";")


class LabelError(ValueError):
    """A label (or label set) that cannot be accepted; ``label`` is the offending text."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"invalid label {label!r}: {reason}")
        self.label = label
        self.reason = reason


class LabelParseError(LabelError):
    """Text that does not parse as a label."""


@dataclass(frozen=True, slots=True, order=True)
class Label:
    """An immutable label. Field order gives the sort order used by canonical strings.

    ``cidr`` keys are normalised to the network address (``10.0.0.1/8`` becomes
    ``10.0.0.0/8``) so that one prefix always yields one label and thus one identity.
    """

    source: LabelSource
    key: str
    value: str = ""

    def __post_init__(self) -> None:
        text = _format(self.source, self.key, self.value)
        try:
            source = LabelSource(self.source)
        except ValueError:
            raise LabelError(text, f"unknown source {self.source!r} ({_sources()})") from None
        object.__setattr__(self, "source", source)
        if not self.key:
            raise LabelError(text, "empty key")
        for ch in _FORBIDDEN_IN_KEY:
            if ch in self.key:
                raise LabelError(text, f"key must not contain {ch!r}")
        if any(ch.isspace() for ch in self.key):
            raise LabelError(text, "key must not contain whitespace")
        if ";" in self.value:
            raise LabelError(text, "value must not contain ';'")
        if source is LabelSource.RESERVED:
            if self.key not in RESERVED_NAMES:
                names = ", ".join(sorted(RESERVED_NAMES))
                raise LabelError(text, f"unknown reserved label {self.key!r} (one of {names})")
            if self.value:
                raise LabelError(text, "reserved labels take no value")
        if source is LabelSource.CIDR:
            try:
                net = ipaddress.ip_network(self.key, strict=False)
            except ValueError:
                raise LabelError(text, f"{self.key!r} is not a CIDR prefix") from None
            if self.value:
                raise LabelError(text, "cidr labels take no value")
            object.__setattr__(self, "key", str(net))

    def __str__(self) -> str:
        return _format(self.source, self.key, self.value)

    def matches(self, other: Label) -> bool:
        """True when this label, read as a selector term, is satisfied by ``other``.

        A selector term of source ``any`` ignores the other label's source.
        """
        if self.key != other.key or self.value != other.value:
            return False
        return self.source is LabelSource.ANY or self.source == other.source

    def to_dict(self) -> dict[str, str]:
        """The ``{"key", "value", "source"}`` form used in policy rule ``labels``."""
        return {"key": self.key, "value": self.value, "source": str(self.source)}


def _format(source: str, key: str, value: str) -> str:
    return f"{source}:{key}={value}" if value else f"{source}:{key}"


def _sources() -> str:
    return "one of " + ", ".join(s.value for s in LabelSource)


def split_source(text: str) -> tuple[str | None, str]:
    """Split ``source:rest`` into its parts; ``None`` when there is no source prefix.

    A ``:`` only starts a source when it comes before any ``=``, so that values such as
    ``url=http://x`` keep their colon.
    """
    colon = text.find(":")
    equals = text.find("=")
    if colon < 0 or (0 <= equals < colon):
        return None, text
    return text[:colon], text[colon + 1 :]


def _parse(text: str, default_source: LabelSource, allow_any: bool) -> Label:
    if not isinstance(text, str):
        raise LabelParseError(repr(text), "a label must be a string")
    stripped = text.strip()
    if not stripped:
        raise LabelParseError(text, "empty label")
    source_text, rest = split_source(stripped)
    if source_text is None:
        source = default_source
    else:
        try:
            source = LabelSource(source_text)
        except ValueError:
            raise LabelParseError(text, f"unknown source {source_text!r} ({_sources()})") from None
    if source is LabelSource.ANY and not allow_any:
        raise LabelParseError(text, "source 'any' is only valid in selectors")
    key, _, value = rest.partition("=")
    try:
        return Label(source, key, value)
    except LabelError as exc:
        raise LabelParseError(text, exc.reason) from None


def parse_label(text: str) -> Label:
    """Parse a label attached to an endpoint: ``[source:]key[=value]``, bare means unspec."""
    return _parse(text, LabelSource.UNSPEC, allow_any=False)


def parse_select_label(text: str) -> Label:
    """Parse a label used to select: ``[source:]key[=value]``, bare means any source."""
    return _parse(text, LabelSource.ANY, allow_any=True)
