"""CHECK's comparison of prevResult, the agent's endpoint and the netns' view."""

from __future__ import annotations

import copy

from cilium_py.cni import check, result
from tests.unit.cni.test_cni_result import ENDPOINT, NETNS

# GET /v1/endpoint/{id}/interface as the agent answers it for an intact attachment.
SEEN = {
    "exists": True, "netns": NETNS, "ifname": "eth0", "ifindex": 2,
    "mac": "02:00:00:00:00:05", "up": True,
    "addresses": [{"family": 4, "address": "10.200.0.5", "prefixlen": 32},
                  {"family": 6, "address": "fd10:200::5", "prefixlen": 128}],
    "routes": [{"family": 4, "dst": "0.0.0.0/0", "gateway": "10.200.0.1", "scope": "global"},
               {"family": 4, "dst": "10.200.0.1/32", "gateway": None, "scope": "link"},
               {"family": 6, "dst": "fd10:200::1/128", "gateway": None, "scope": "global"},
               {"family": 6, "dst": "::/0", "gateway": "fd10:200::1", "scope": "global"}],
}


def prev(v: str = "1.1.0") -> dict:
    return result.parse(result.render(result.from_endpoint(ENDPOINT, "eth0", NETNS), v), v)


def observed(**changes: object) -> dict:
    return check.observed_from_agent({**copy.deepcopy(SEEN), **changes})


def test_intact_attachment_has_no_problems() -> None:
    for v in ("0.4.0", "1.0.0", "1.1.0"):
        assert check.compare(prev(v), ENDPOINT, observed(), "eth0", NETNS,
                             result.expresses_link_routes(v)) == []


def test_on_link_routes_are_checked_in_the_netns_before_1_1() -> None:
    # A 1.0 prevResult cannot list the router's on-link route; the netns still must.
    seen = observed(routes=[r for r in SEEN["routes"] if r["gateway"]])
    problems = check.compare(prev("1.0.0"), ENDPOINT, seen, "eth0", NETNS, False)
    assert problems == [f"{NETNS} lacks routes [('10.200.0.1/32', ''), "
                        f"('fd10:200::1/128', '')] via 'eth0'"]


def test_missing_interface() -> None:
    problems = check.compare(prev(), ENDPOINT, observed(exists=False), "eth0", NETNS)
    assert problems == [f"interface 'eth0' does not exist in {NETNS}"]


def test_down_interface_wrong_mac_missing_address_and_route() -> None:
    seen = observed(up=False, mac="02:00:00:00:00:99", addresses=SEEN["addresses"][1:],
                    routes=SEEN["routes"][1:])
    problems = check.compare(prev(), ENDPOINT, seen, "eth0", NETNS)
    text = " | ".join(problems)
    assert "is down" in text
    assert "has MAC 02:00:00:00:00:99" in text
    assert "10.200.0.5/32" in text
    assert "0.0.0.0/0" in text


def test_prev_result_that_disagrees_with_the_agent() -> None:
    other = copy.deepcopy(ENDPOINT)
    other["addressing"]["ipv4"] = "10.200.0.9"
    problems = check.compare(prev(), other, observed(), "eth0", NETNS)
    assert any("differ from the agent's endpoint" in p for p in problems)


def test_prev_result_for_another_sandbox() -> None:
    problems = check.compare(prev(), ENDPOINT, observed(), "eth0", "/var/run/netns/other")
    assert any("lists no interface" in p for p in problems)


def test_default_routes_of_both_families_are_recognised() -> None:
    seen = observed()["routes"]
    assert ("0.0.0.0/0", "10.200.0.1") in seen
    assert ("::/0", "fd10:200::1") in seen
    assert ("fd10:200::1/128", "") in seen
