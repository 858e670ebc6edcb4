"""Policy -> Envoy RBAC: one ALLOW policy per redirect entry.

Pure. Each redirect entry of an endpoint becomes one named RBAC policy whose
permission says *which connection and which request* (destination address and port,
method, path, host, headers) and whose principal says *who* (the peer's address set,
see :mod:`..addresses`). A request is allowed when any policy matches: the union of
the rules, as the resolver's closure promises. Nothing matching means 403.

Rule language (Cilium's): ``method``, ``path`` and ``host`` are regular expressions
matched against the whole ``:method``, ``:path`` and ``:authority`` (RE2 full match,
so ``^``/``$`` are harmless); ``headers`` entries are ``"Name: value"`` (exact value)
or ``"Name"`` (present). An empty rule ``{}`` allows every request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ...labels import IPNetwork
from ...policy import HTTPRule
from ..addresses import AddressSets, Clause
from ..redirects import EGRESS, INGRESS, Redirect


def _cidr(net: IPNetwork) -> dict[str, Any]:
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _regex(header: str, regex: str) -> dict[str, Any]:
    return {"header": {"name": header, "string_match": {"safe_regex": {"regex": regex}}}}


def header_matcher(text: str) -> dict[str, Any]:
    """``"Name: value"`` -> exact match of the value; ``"Name"`` -> present."""
    name, sep, value = text.partition(":")
    name = name.strip().lower()
    if not sep:
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": {"exact": value.strip()}}}


def http_rule_permission(rule: HTTPRule) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if rule.method:
        parts.append(_regex(":method", rule.method))
    if rule.path:
        parts.append(_regex(":path", rule.path))
    if rule.host:
        parts.append(_regex(":authority", rule.host))
    parts.extend(header_matcher(h) for h in rule.headers)
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def _or(items: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    if len(items) == 1:
        return items[0]
    return {key: {"rules" if key == "or_rules" else "ids": list(items)}}


def _clauses_principal(clauses: Iterable[Clause]) -> dict[str, Any]:
    ors = []
    for net, excepts in clauses:
        inc = {"direct_remote_ip": _cidr(net)}
        if excepts:
            exc = _or([{"direct_remote_ip": _cidr(q)} for q in excepts], "or_ids")
            inc = {"and_ids": {"ids": [inc, {"not_id": exc}]}}
        ors.append(inc)
    if not ors:
        return {"not_id": {"any": True}}
    return _or(ors, "or_ids")


def _clauses_destination(clauses: Iterable[Clause]) -> dict[str, Any]:
    ors = []
    for net, excepts in clauses:
        inc = {"destination_ip": _cidr(net)}
        if excepts:
            exc = _or([{"destination_ip": _cidr(q)} for q in excepts], "or_rules")
            inc = {"and_rules": {"rules": [inc, {"not_rule": exc}]}}
        ors.append(inc)
    if not ors:
        return {"not_rule": {"any": True}}
    return _or(ors, "or_rules")


def _own_addresses(addresses: Iterable[str]) -> list[IPNetwork]:
    import ipaddress

    return [ipaddress.ip_network(a) for a in addresses]


def redirect_policy(redirect: Redirect, sets: AddressSets) -> dict[str, Any]:
    """The RBAC policy of one redirect entry."""
    http = redirect.rules.http
    rules = _or([http_rule_permission(r) for r in http], "or_rules") if http else \
        {"not_rule": {"any": True}}
    own = _own_addresses(redirect.addresses)
    permission: list[dict[str, Any]] = []
    if redirect.direction == INGRESS:
        permission.append(_or([{"destination_ip": _cidr(n)} for n in own], "or_rules")
                          if own else {"not_rule": {"any": True}})
        peer = {"any": True} if redirect.identity == 0 else \
            _clauses_principal(sets.clauses({redirect.identity}))
        principal = peer
    elif redirect.direction == EGRESS:
        if redirect.identity != 0:
            permission.append(_clauses_destination(sets.clauses({redirect.identity})))
        principal = _or([{"direct_remote_ip": _cidr(n)} for n in own], "or_ids") if own else \
            {"not_id": {"any": True}}
    else:  # pragma: no cover - Redirect is built by endpoint_redirects
        raise ValueError(f"unknown direction {redirect.direction!r}")
    if redirect.port:
        permission.append({"destination_port": redirect.port})
    permission.append(rules)
    return {
        "permissions": [permission[0] if len(permission) == 1 else
                        {"and_rules": {"rules": permission}}],
        "principals": [principal],
    }


def rbac_rules(redirects: Iterable[Redirect], sets: AddressSets) -> dict[str, Any]:
    """RBAC ``rules`` (action ALLOW) for the redirects of one direction."""
    policies = {r.name: redirect_policy(r, sets) for r in redirects if r.rules.http}
    return {"action": "ALLOW", "policies": policies}
