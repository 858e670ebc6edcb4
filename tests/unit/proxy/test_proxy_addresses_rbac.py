"""Identity address sets and the policy -> RBAC translation (pure)."""

from __future__ import annotations

import ipaddress

from cilium_py.policy import HTTPRule, L7Rules
from cilium_py.policy.l7 import HTTPRequest
from cilium_py.proxy.addresses import AddressSets
from cilium_py.proxy.envoy.rbac import header_matcher, http_rule_permission, redirect_policy
from cilium_py.proxy.redirects import Redirect

IPCACHE = {"10.0.0.0/8": 300, "10.1.0.0/16": 301, "10.1.2.3/32": 300, "10.9.0.5/32": 256}


def test_identity_of_is_longest_prefix_and_world_by_default() -> None:
    sets = AddressSets(IPCACHE)
    assert sets.identity_of("10.1.2.3") == 300
    assert sets.identity_of("10.1.9.9") == 301
    assert sets.identity_of("10.2.0.1") == 300
    assert sets.identity_of("192.0.2.1") == 2
    assert sets.identity_of("2001:db8::1") == 2


def _covered(clauses, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net and not any(ip in q for q in ex) for net, ex in clauses
               if net.version == ip.version)


def test_clauses_match_longest_prefix_semantics() -> None:
    sets = AddressSets(IPCACHE)
    for wanted in ({300}, {301}, {256}, {2}, {300, 2}):
        clauses = sets.clauses(wanted)
        for addr in ("10.1.2.3", "10.1.9.9", "10.2.0.1", "10.9.0.5", "192.0.2.1", "fd00::1"):
            assert _covered(clauses, addr) == (sets.identity_of(addr) in wanted), (wanted, addr)


def test_http_rule_matchers() -> None:
    perm = http_rule_permission(HTTPRule(method="GET", path="/p/.*", headers=("X-A: 1", "X-B")))
    rules = perm["and_rules"]["rules"]
    assert rules[0] == {"header": {"name": ":method",
                                   "string_match": {"safe_regex": {"regex": "GET"}}}}
    assert rules[1]["header"]["name"] == ":path"
    assert rules[2] == header_matcher("X-A: 1") == {
        "header": {"name": "x-a", "string_match": {"exact": "1"}}}
    assert rules[3] == {"header": {"name": "x-b", "present_match": True}}
    assert http_rule_permission(HTTPRule()) == {"any": True}


def test_ingress_redirect_policy_names_destination_port_and_peers() -> None:
    sets = AddressSets({"10.0.0.2/32": 256, "10.0.0.3/32": 257})
    r = Redirect("server", "ingress", 257, 80, 6, ("10.0.0.2",),
                 L7Rules(http=(HTTPRule(path="/a"),)))
    pol = redirect_policy(r, sets)
    perm = pol["permissions"][0]["and_rules"]["rules"]
    assert perm[0] == {"destination_ip": {"address_prefix": "10.0.0.2", "prefix_len": 32}}
    assert perm[1] == {"destination_port": 80}
    assert pol["principals"] == [{"direct_remote_ip": {"address_prefix": "10.0.0.3",
                                                       "prefix_len": 32}}]


def test_http_rule_allows_like_the_proxy() -> None:
    rule = HTTPRule(method="GET|HEAD", path="/v1/.*", headers=("X-Token: s",))
    assert rule.allows(HTTPRequest("GET", "/v1/x", headers=(("x-token", "s"),)))
    assert not rule.allows(HTTPRequest("GET", "/v1/x"))
    assert not rule.allows(HTTPRequest("POST", "/v1/x", headers=(("X-Token", "s"),)))
    assert not rule.allows(HTTPRequest("GET", "/v2/v1/x", headers=(("X-Token", "s"),)))
    assert HTTPRule(path="^/a$").allows(HTTPRequest("GET", "/a"))
