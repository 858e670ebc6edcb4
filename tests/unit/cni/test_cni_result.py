"""Result formatting for every spec version, parsing prevResults back, and merging."""

from __future__ import annotations

import copy

import pytest

from cilium_py.cni import result

NETNS = "/var/run/netns/ctr"

ENDPOINT = {
    "id": "c1-eth0", "container-id": "c1", "interface-name": "eth0", "netns": NETNS,
    "host-interface": "lxc1234", "ifindex": 7, "mac": "02:00:00:00:00:05",
    "host-mac": "02:00:00:01:00:05",
    "addressing": {"ipv4": "10.200.0.5", "ipv6": "fd10:200::5"},
    "gateway": {"ipv4": "10.200.0.1", "ipv6": "fd10:200::1"},
    "routes": [
        {"family": 4, "dst": "10.200.0.1/32", "gateway": None, "scope": "link"},
        {"family": 4, "dst": "0.0.0.0/0", "gateway": "10.200.0.1", "scope": "global"},
        {"family": 6, "dst": "fd10:200::1/128", "gateway": None, "scope": "global"},
        {"family": 6, "dst": "::/0", "gateway": "fd10:200::1", "scope": "global"},
    ],
    "labels": [], "identity": 256, "state": "ready",
}


def v4_only() -> dict:
    ep = copy.deepcopy(ENDPOINT)
    ep["addressing"]["ipv6"] = ep["gateway"]["ipv6"] = None
    ep["routes"] = [r for r in ep["routes"] if r["family"] == 4]
    return ep


def v6_only() -> dict:
    ep = copy.deepcopy(ENDPOINT)
    ep["addressing"]["ipv4"] = ep["gateway"]["ipv4"] = None
    ep["routes"] = [r for r in ep["routes"] if r["family"] == 6]
    return ep


INTERFACES = [
    {"name": "lxc1234", "mac": "02:00:00:01:00:05"},
    {"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": NETNS},
]


def internal(ep: dict = ENDPOINT, dns: dict | None = None) -> dict:
    return result.from_endpoint(ep, "eth0", NETNS, dns)


@pytest.mark.parametrize("v", ["0.1.0", "0.2.0"])
def test_legacy_results(v: str) -> None:
    assert result.render(internal(dns={"nameservers": ["10.96.0.10"]}), v) == {
        "cniVersion": v,
        # No on-link route to the router: without gw it would read "via the default
        # gateway", and no scope exists before 1.1 (issue 11 item 17).
        "ip4": {"ip": "10.200.0.5/32", "gateway": "10.200.0.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}]},
        "ip6": {"ip": "fd10:200::5/128", "gateway": "fd10:200::1",
                "routes": [{"dst": "::/0", "gw": "fd10:200::1"}]},
        "dns": {"nameservers": ["10.96.0.10"]},
    }


@pytest.mark.parametrize("v", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_3_and_0_4_results_tag_ip_versions(v: str) -> None:
    assert result.render(internal(), v) == {
        "cniVersion": v,
        "interfaces": INTERFACES,
        "ips": [
            {"version": "4", "address": "10.200.0.5/32", "gateway": "10.200.0.1",
             "interface": 1},
            {"version": "6", "address": "fd10:200::5/128", "gateway": "fd10:200::1",
             "interface": 1},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"},
                   {"dst": "::/0", "gw": "fd10:200::1"}],
        "dns": {},
    }


def test_1_0_result_has_no_ip_version() -> None:
    doc = result.render(internal(), "1.0.0")
    assert doc["cniVersion"] == "1.0.0"
    assert doc["ips"] == [
        {"address": "10.200.0.5/32", "gateway": "10.200.0.1", "interface": 1},
        {"address": "fd10:200::5/128", "gateway": "fd10:200::1", "interface": 1},
    ]
    assert doc["interfaces"] == INTERFACES
    assert all("scope" not in r for r in doc["routes"])
    # Every route of a pre-1.1 result has its gateway (issue 11 item 17).
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"},
                             {"dst": "::/0", "gw": "fd10:200::1"}]


def test_1_1_result_adds_link_scope_to_routes() -> None:
    doc = result.render(internal(), "1.1.0")
    assert "version" not in doc["ips"][0]
    # Both families' routes to the router are on-link (issue 11 item 17).
    assert doc["routes"] == [{"dst": "10.200.0.1/32", "scope": 253},
                             {"dst": "0.0.0.0/0", "gw": "10.200.0.1"},
                             {"dst": "fd10:200::1/128", "scope": 253},
                             {"dst": "::/0", "gw": "fd10:200::1"}]


def test_an_earlier_plugins_routes_without_gw_stay_before_1_1() -> None:
    prev = result.parse({"cniVersion": "1.0.0", "interfaces": [], "ips": [],
                         "routes": [{"dst": "192.168.50.0/24"}]}, "1.0.0")
    doc = result.render(result.merge(prev, internal()), "1.0.0")
    assert doc["routes"][0] == {"dst": "192.168.50.0/24"}


def test_ips_point_at_the_container_interface() -> None:
    for v in ("0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        doc = result.render(internal(), v)
        for ip in doc["ips"]:
            iface = doc["interfaces"][ip["interface"]]
            assert iface["name"] == "eth0" and iface["sandbox"] == NETNS


@pytest.mark.parametrize("v", ["0.2.0", "0.4.0", "1.0.0"])
def test_single_family_nodes(v: str) -> None:
    four = result.render(internal(v4_only()), v)
    six = result.render(internal(v6_only()), v)
    if v == "0.2.0":
        assert "ip6" not in four and four["ip4"]["ip"] == "10.200.0.5/32"
        assert "ip4" not in six and six["ip6"]["ip"] == "fd10:200::5/128"
    else:
        assert [ip["address"] for ip in four["ips"]] == ["10.200.0.5/32"]
        assert [ip["address"] for ip in six["ips"]] == ["fd10:200::5/128"]
        assert all(":" in r["dst"] for r in six["routes"])


def test_endpoint_without_host_interface_or_macs() -> None:
    ep = {k: v for k, v in ENDPOINT.items() if k not in ("host-interface", "mac", "host-mac")}
    doc = result.render(internal(ep), "1.0.0")
    assert doc["interfaces"] == [{"name": "eth0", "sandbox": NETNS}]
    assert {ip["interface"] for ip in doc["ips"]} == {0}


def test_addresses_with_a_prefix_are_kept() -> None:
    ep = copy.deepcopy(ENDPOINT)
    ep["addressing"]["ipv4"] = "10.200.0.5/24"
    assert result.render(internal(ep), "1.0.0")["ips"][0]["address"] == "10.200.0.5/24"


@pytest.mark.parametrize("v", ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_parse_inverts_render(v: str) -> None:
    ours = internal(dns={"nameservers": ["10.96.0.10"]})
    back = result.parse(result.render(ours, v), v)
    assert [ip["address"] for ip in back["ips"]] == ["10.200.0.5/32", "fd10:200::5/128"]
    assert {(r["dst"], r.get("gw")) for r in back["routes"]} == {
        (r["dst"], r.get("gw")) for r in ours["routes"]
        if r.get("gw") or result.expresses_link_routes(v)}
    assert back["dns"] == {"nameservers": ["10.96.0.10"]}
    if v != "0.2.0":
        assert back["interfaces"] == INTERFACES
        assert all("version" not in ip for ip in back["ips"])


def test_merge_after_an_earlier_plugin_shifts_interface_indexes() -> None:
    prev = result.parse({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "dummy0"}],
        "ips": [{"address": "192.168.50.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.50.0/24"}],
        "dns": {"nameservers": ["1.1.1.1"]},
    }, "1.0.0")
    merged = result.render(result.merge(prev, internal()), "1.0.0")
    assert [i["name"] for i in merged["interfaces"]] == ["dummy0", "lxc1234", "eth0"]
    assert [ip["interface"] for ip in merged["ips"]] == [0, 2, 2]
    assert merged["routes"][0] == {"dst": "192.168.50.0/24"}
    assert merged["dns"] == {"nameservers": ["1.1.1.1"]}


def test_render_does_not_alias_the_input() -> None:
    ours = internal(dns={"nameservers": ["10.96.0.10"]})
    doc = result.render(ours, "1.0.0")
    doc["interfaces"][0]["name"] = "changed"
    doc["dns"]["nameservers"].append("x")
    assert ours["interfaces"][0]["name"] == "lxc1234"
    assert ours["dns"] == {"nameservers": ["10.96.0.10"]}
