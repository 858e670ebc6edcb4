"""CHECK's comparison of prevResult, the agent's endpoint and the netns' view."""

from __future__ import annotations

import copy

from cilium_py.cni import check, result
from cilium_py.cni.netns_probe import SEPARATOR, split_listing
from tests.unit.cni.test_cni_result import ENDPOINT, NETNS

LINKS = [{
    "ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
    "address": "02:00:00:00:00:05",
    "addr_info": [
        {"family": "inet", "local": "10.200.0.5", "prefixlen": 32, "scope": "global"},
        {"family": "inet6", "local": "fd10:200::5", "prefixlen": 128, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
    ],
}]
ROUTES4 = [{"dst": "default", "gateway": "10.200.0.1", "dev": "eth0", "flags": []},
           {"dst": "10.200.0.1", "dev": "eth0", "scope": "link", "flags": []}]
ROUTES6 = [{"dst": "fd10:200::1", "dev": "eth0", "metric": 1024, "flags": []},
           {"dst": "fe80::/64", "dev": "eth0", "metric": 256, "flags": []},
           {"dst": "default", "gateway": "fd10:200::1", "dev": "eth0", "flags": []}]


def routes() -> list[dict]:
    return [{**r, "family": 4} for r in ROUTES4] + [{**r, "family": 6} for r in ROUTES6]


def prev(v: str = "1.0.0") -> dict:
    return result.parse(result.render(result.from_endpoint(ENDPOINT, "eth0", NETNS), v), v)


def observed(links: list[dict] = LINKS, rts: list[dict] | None = None) -> dict:
    return check.observed_from_ip_json(links, routes() if rts is None else rts, "eth0")


def test_intact_attachment_has_no_problems() -> None:
    for v in ("0.4.0", "1.0.0", "1.1.0"):
        assert check.compare(prev(v), ENDPOINT, observed(), "eth0", NETNS) == []


def test_missing_interface() -> None:
    problems = check.compare(prev(), ENDPOINT, observed(links=[]), "eth0", NETNS)
    assert problems == [f"interface 'eth0' does not exist in {NETNS}"]


def test_down_interface_wrong_mac_missing_address_and_route() -> None:
    link = copy.deepcopy(LINKS[0])
    link["flags"] = ["BROADCAST"]
    link["address"] = "02:00:00:00:00:99"
    link["addr_info"] = link["addr_info"][1:]
    problems = check.compare(prev(), ENDPOINT, observed([link], routes()[1:]), "eth0", NETNS)
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


def test_split_listing() -> None:
    import json

    text = "\n".join([json.dumps(LINKS), SEPARATOR, json.dumps(ROUTES4), SEPARATOR, ""])
    links, rts = split_listing(text)
    assert links[0]["ifname"] == "eth0"
    assert {r["family"] for r in rts} == {4}
