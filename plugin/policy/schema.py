"""Validation of Cilium 1.x policy JSON into :class:`~.rule.Rule` objects.

The document is an array of rules, exactly as Cilium documents it: keys in any case
(``"HTTP"``, ``"Role"``, ``"toports"``), protocols in any case. Everything wrong with a document
is collected and reported at once, each problem under its path
(``[2].ingress[0].toPorts[0].ports[0].port``), and nothing of an invalid document is
returned: callers apply a document whole or not at all.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validates_schema
from marshmallow.validate import Length, OneOf

from cilium_py.labels import Label, LabelError, LabelSet, parse_label

from .cidr import CIDRRule
from .entities import Entity
from .errors import PolicyValidationError
from .kafka import API_KEYS as KAFKA_API_KEYS
from .kafka import MAX_API_VERSION as KAFKA_MAX_API_VERSION
from .kafka import MAX_TOPIC_LEN as KAFKA_MAX_TOPIC_LEN
from .kafka import ROLES as KAFKA_ROLES
from .l4 import PortProtocol, PortRule, Protocol, parse_port
from .l7 import HTTPRule, KafkaRule, L7Rules
from .rule import Direction, Rule, Section
from .selector import EndpointSelector, Operator, Requirement, parse_selector_key

DOCUMENT = "$"
#: Descriptions are for people; a rule's description longer than this is refused.
MAX_DESCRIPTION = 16 * 1024

_MESSAGES = {
    "required": "is required",
    "null": "must not be null",
}


# -- fields ---------------------------------------------------------------------------


def _str(**kwargs: Any) -> fields.String:
    return fields.String(error_messages={**_MESSAGES, "invalid": "must be a string"}, **kwargs)


def _list(inner: fields.Field, **kwargs: Any) -> fields.List:
    # null is accepted and read as absent, as Go's JSON decoding does for Cilium.
    kwargs.setdefault("allow_none", True)
    return fields.List(inner, error_messages={**_MESSAGES, "invalid": "must be a list"}, **kwargs)


def _nested(schema: type[Schema], **kwargs: Any) -> fields.Nested:
    return fields.Nested(schema, error_messages={**_MESSAGES}, **kwargs)


class _PortField(fields.Field):
    """A port as Cilium writes it (``"80"``) or as people also write it (``80``)."""

    #: JSON Schema for the generated OpenAPI document (cilium_py.api.openapi).
    openapi = {"anyOf": [{"type": "string"}, {"type": "integer"}]}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_port(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _ProtocolField(fields.Field):
    openapi = {"type": "string", "description": "TCP, UDP or ANY, in any case"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Protocol:
        if not isinstance(value, str):
            raise ValidationError("must be one of TCP, UDP, ANY")
        try:
            return Protocol.parse(value)
        except ValueError:
            raise ValidationError(
                f"must be one of TCP, UDP, ANY (any case), not {value!r}"
            ) from None


class _CIDRField(fields.Field):
    """An IPv4 or IPv6 prefix; a bare address means a host prefix, host bits are cleared."""

    openapi = {"type": "string", "description": "IPv4 or IPv6 prefix"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError("must be a CIDR string")
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValidationError(f"{value!r} is not a valid IPv4 or IPv6 CIDR") from None


class _LabelField(fields.Field):
    """A rule label: ``{"key", "value", "source"}`` or the string ``[source:]key[=value]``."""

    openapi = {"anyOf": [{"type": "string"}, {"type": "object", "required": ["key"],
                                              "properties": {"key": {"type": "string"},
                                                             "value": {"type": "string"},
                                                             "source": {"type": "string"}}}]}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Label:
        try:
            if isinstance(value, str):
                return parse_label(value)
            if isinstance(value, Mapping):
                unknown = set(value) - {"key", "value", "source"}
                if unknown:
                    raise ValidationError(f"unknown field(s) {', '.join(sorted(unknown))}")
                if "key" not in value:
                    raise ValidationError("key is required")
                (label,) = LabelSet.from_dicts([value])
                return label
        except LabelError as exc:
            raise ValidationError(str(exc)) from None
        raise ValidationError('must be {"key", "value", "source"} or a label string')


class _RegexField(fields.String):
    """A regular expression (HTTP method, path, host); must compile."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            re.compile(text)
        except re.error as exc:
            raise ValidationError(f"invalid regular expression: {exc}") from None
        return text


def _regex() -> _RegexField:
    return _RegexField(error_messages={**_MESSAGES, "invalid": "must be a string"})


# -- schemas --------------------------------------------------------------------------


class _Base(Schema):
    """Keys of the policy language match without regard to case, as Cilium's decoder
    matches them (its examples write ``HTTP``, ``Role``, ...): each incoming key is
    renamed to the field it names before validation. Values (label keys in
    ``matchLabels``, topics, paths) keep their case."""

    error_messages = {"unknown": "unknown field", "type": "must be an object"}

    @pre_load
    def _fold_keys(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = {(f.data_key or name).lower(): (f.data_key or name)
                 for name, f in self.fields.items()}
        out: dict[Any, Any] = {}
        given: dict[Any, Any] = {}
        for key, value in data.items():
            target = names.get(key.lower(), key) if isinstance(key, str) else key
            if target in out:
                raise ValidationError(f"given twice: {given[target]!r} and {key!r}",
                                      str(key))
            out[target] = value
            given[target] = key
        return out


class RequirementSchema(_Base):
    """A ``matchExpressions`` entry."""

    key = _str(required=True)
    operator = _str(
        required=True,
        validate=OneOf([op.value for op in Operator], error="must be one of {choices}"),
    )
    values = _list(_str())

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        try:
            parse_selector_key(data["key"])
        except LabelError as exc:
            raise ValidationError(str(exc), field_name="key") from None
        needs_values = data["operator"] in (Operator.IN, Operator.NOT_IN)
        if needs_values and not data.get("values"):
            raise ValidationError(f"operator {data['operator']} needs values", "values")
        if not needs_values and data.get("values"):
            raise ValidationError(f"operator {data['operator']} takes no values", "values")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Requirement:
        source, key = parse_selector_key(data["key"])
        values = tuple(dict.fromkeys(data.get("values") or ()))
        return Requirement(source, key, Operator(data["operator"]), values)


class SelectorSchema(_Base):
    """An endpoint selector: ``matchLabels`` and ``matchExpressions``."""

    match_labels = fields.Dict(
        keys=_str(),
        values=_str(),
        data_key="matchLabels",
        allow_none=True,
        error_messages={"invalid": "must be an object of strings"},
    )
    match_expressions = _list(_nested(RequirementSchema), data_key="matchExpressions")

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        problems = []
        for key, value in (data.get("match_labels") or {}).items():
            try:
                EndpointSelector.build({key: value})
            except LabelError as exc:
                problems.append(str(exc))
        if problems:
            raise ValidationError("; ".join(problems), "matchLabels")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> EndpointSelector:
        return EndpointSelector.build(
            data.get("match_labels"), tuple(data.get("match_expressions") or ())
        )


class CIDRSetSchema(_Base):
    """``{"cidr": ..., "except": [...]}``: every except must lie inside the cidr."""

    cidr = _CIDRField(required=True, error_messages=dict(_MESSAGES))
    excepts = _list(_CIDRField(), data_key="except")

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        cidr = data["cidr"]
        bad = {
            i: [f"{exc} is not inside {cidr}"]
            for i, exc in enumerate(data.get("excepts") or ())
            if exc.version != cidr.version or not exc.subnet_of(cidr)
        }
        if bad:
            raise ValidationError({"except": bad})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> CIDRRule:
        return CIDRRule(data["cidr"], tuple(dict.fromkeys(data.get("excepts") or ())))


class HTTPRuleSchema(_Base):
    method = _regex()
    path = _regex()
    host = _regex()
    headers = _list(_str())

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> HTTPRule:
        return HTTPRule(
            method=data.get("method") or "",
            path=data.get("path") or "",
            host=data.get("host") or "",
            headers=tuple(data.get("headers") or ()),
        )


_KAFKA_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")


class _KafkaVersionField(fields.Field):
    """``apiVersion``: a decimal string as Cilium writes it (``"1"``), or a number."""

    openapi = {"anyOf": [{"type": "string"}, {"type": "integer"}]}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError("must be a string")
        text = str(value).strip()
        if not text.isdigit() or int(text) > KAFKA_MAX_API_VERSION:
            raise ValidationError(
                f"must be a decimal number from 0 to {KAFKA_MAX_API_VERSION}, not {value!r}"
            )
        return str(int(text))


class KafkaRuleSchema(_Base):
    """A ``rules.kafka`` entry; ``role`` and ``apiKey`` match in any case (Cilium)."""

    role = _str()
    api_key = _str(data_key="apiKey")
    api_version = _KafkaVersionField(data_key="apiVersion", error_messages=dict(_MESSAGES))
    client_id = _str(data_key="clientID")
    topic = _str()

    @validates_schema(skip_on_field_errors=False)
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, str] = {}
        role = data.get("role")
        if role and role.lower() not in KAFKA_ROLES:
            errors["role"] = f"must be one of {', '.join(sorted(KAFKA_ROLES))}, not {role!r}"
        api_key = data.get("api_key")
        if api_key and api_key.lower() not in KAFKA_API_KEYS:
            errors["apiKey"] = f"unknown Kafka API key {api_key!r}"
        if api_key and role:
            errors["role"] = "role and apiKey cannot be combined"
        topic = data.get("topic")
        if topic and (len(topic) > KAFKA_MAX_TOPIC_LEN or not _KAFKA_TOPIC.match(topic)):
            errors["topic"] = (
                f"must be 1-{KAFKA_MAX_TOPIC_LEN} characters of a-z, A-Z, 0-9, '.', '_', '-'"
            )
        if errors:
            raise ValidationError({k: [v] for k, v in errors.items()})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> KafkaRule:
        return KafkaRule(
            role=(data.get("role") or "").lower(),
            api_key=(data.get("api_key") or "").lower(),
            api_version=data.get("api_version") or "",
            client_id=data.get("client_id") or "",
            topic=data.get("topic") or "",
        )


class L7RulesSchema(_Base):
    """``rules``: ``http`` (also ``HTTP``, as Cilium's examples write it) or ``kafka``."""

    http = _list(_nested(HTTPRuleSchema))  # "HTTP" too: keys match in any case
    kafka = _list(_nested(KafkaRuleSchema))

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("http") and data.get("kafka") is not None:
            raise ValidationError("only one L7 protocol per port rule (http or kafka)", "kafka")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> L7Rules:
        http = data.get("http") or []
        kafka = data.get("kafka")
        return L7Rules(http=tuple(http), kafka=None if kafka is None else tuple(kafka))


class PortProtocolSchema(_Base):
    port = _PortField(required=True, error_messages=dict(_MESSAGES))
    protocol = _ProtocolField(allow_none=True)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> PortProtocol:
        return PortProtocol(data["port"], data.get("protocol") or Protocol.ANY)


class PortRuleSchema(_Base):
    """A ``toPorts`` entry."""

    ports = _list(_nested(PortProtocolSchema), required=True, allow_none=False)
    rules = _nested(L7RulesSchema, allow_none=True)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data["ports"]:
            raise ValidationError("must list at least one port", "ports")
        rules = data.get("rules")
        if rules is not None and not rules.is_empty():
            udp = [str(p) for p in data["ports"] if p.protocol is Protocol.UDP]
            if udp:
                raise ValidationError(f"L7 rules need TCP; not valid on {', '.join(udp)}", "rules")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> PortRule:
        ports = tuple(dict.fromkeys(data["ports"]))
        return PortRule(ports, data.get("rules") or L7Rules())


class _SectionSchema(_Base):
    """Shared checks of ingress and egress sections (their field names differ)."""

    direction: Direction

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        p = self.direction.peer_prefix
        kinds = []
        if data.get("endpoints"):
            kinds.append((f"{p}Endpoints", f"{p}Endpoints"))
        if data.get("cidr") or data.get("cidr_set"):
            field = f"{p}CIDR" if data.get("cidr") else f"{p}CIDRSet"
            kinds.append((field, f"{p}CIDR/{p}CIDRSet"))
        if data.get("entities"):
            kinds.append((f"{p}Entities", f"{p}Entities"))
        errors: dict[str, list[str]] = {}
        if len(kinds) > 1:
            first = kinds[0][1]
            for field, _name in kinds[1:]:
                errors[field] = [
                    f"cannot be combined with {first}: only one kind of L3 selector "
                    f"({p}Endpoints, {p}CIDR/{p}CIDRSet, {p}Entities) per section"
                ]
        if data.get("to_ports") and (data.get("cidr") or data.get("cidr_set")):
            errors["toPorts"] = [
                f"cannot be combined with {p}CIDR/{p}CIDRSet: toPorts goes with "
                f"{p}Endpoints, {p}Entities or alone"
            ]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Section:
        def tup(name: str) -> tuple[Any, ...]:
            return tuple(dict.fromkeys(data.get(name) or ()))

        return Section(
            endpoints=tup("endpoints"),
            requires=tup("requires"),
            cidr=tup("cidr"),
            cidr_set=tup("cidr_set"),
            entities=tuple(Entity(e) for e in tup("entities")),
            to_ports=tup("to_ports"),
        )


def _section_schema(direction: Direction) -> type[_SectionSchema]:
    p = direction.peer_prefix
    entities = [e.value for e in Entity]
    declared: dict[str, Any] = {
        "direction": direction,
        "endpoints": _list(_nested(SelectorSchema), data_key=f"{p}Endpoints"),
        "requires": _list(_nested(SelectorSchema), data_key=f"{p}Requires"),
        "cidr": _list(_CIDRField(), data_key=f"{p}CIDR"),
        "cidr_set": _list(_nested(CIDRSetSchema), data_key=f"{p}CIDRSet"),
        "entities": _list(
            _str(validate=OneOf(entities, error="must be one of {choices}")),
            data_key=f"{p}Entities",
        ),
        "to_ports": _list(_nested(PortRuleSchema), data_key="toPorts"),
    }
    name = f"{direction.value.capitalize()}Schema"
    return type(name, (_SectionSchema,), declared)


IngressSchema = _section_schema(Direction.INGRESS)
EgressSchema = _section_schema(Direction.EGRESS)


class RuleSchema(_Base):
    """One rule of the policy array."""

    endpoint_selector = _nested(SelectorSchema, required=True, data_key="endpointSelector")
    ingress = _list(_nested(IngressSchema))
    egress = _list(_nested(EgressSchema))
    labels = _list(_LabelField())
    description = _str(allow_none=True, validate=Length(max=MAX_DESCRIPTION,
                                                        error="at most {max} characters"))

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        try:
            LabelSet(data.get("labels") or ())
        except LabelError as exc:
            raise ValidationError(str(exc), "labels") from None

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Rule:
        return Rule(
            endpoint_selector=data["endpoint_selector"],
            ingress=tuple(data.get("ingress") or ()),
            egress=tuple(data.get("egress") or ()),
            labels=LabelSet(data.get("labels") or ()),
            description=data.get("description") or "",
        )


# -- entry points ---------------------------------------------------------------------


def parse_policy(document: Any) -> list[Rule]:
    """Validate a policy document (JSON text, bytes or the decoded array) into rules.

    Raises :class:`PolicyValidationError` listing every problem by path; ``$`` names
    the document itself (not JSON, not an array).
    """
    if isinstance(document, bytes | bytearray):
        try:
            document = document.decode()
        except UnicodeDecodeError:
            raise PolicyValidationError({DOCUMENT: "not UTF-8 text"}) from None
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise PolicyValidationError({DOCUMENT: f"not valid JSON: {exc}"}) from None
    if not isinstance(document, list):
        raise PolicyValidationError({DOCUMENT: "must be a JSON array of rules"})
    try:
        return RuleSchema(many=True).load(document)
    except ValidationError as exc:
        raise PolicyValidationError(flatten_errors(exc.messages)) from None


def flatten_errors(messages: Any, path: str = "") -> dict[str, str]:
    """marshmallow's nested error dict as ``{"[2].ingress[0].toPorts": "message"}``."""
    out: dict[str, str] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                sub = path
            elif isinstance(key, int):
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            for p, msg in flatten_errors(value, sub).items():
                out[p] = f"{out[p]}; {msg}" if p in out else msg
    elif isinstance(messages, list):
        texts = []
        for item in messages:
            if isinstance(item, dict | list):
                out.update(flatten_errors(item, path))
            else:
                texts.append(str(item))
        if texts:
            key = path or DOCUMENT
            out[key] = "; ".join([out[key], *texts]) if key in out else "; ".join(texts)
    else:
        out[path or DOCUMENT] = str(messages)
    return out
