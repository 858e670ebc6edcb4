"""Isolation rules of internal networks, through the fake iptables of the port tests."""

from __future__ import annotations

from cilium_py.docker.isolation import Isolation
from cilium_py.docker.ports import INTERNAL_CHAIN, Chains

from .test_docker_ports import EID, OTHER, FakeIptables


def test_isolate_drops_forwarding_past_the_pool_both_ways():
    ipt = FakeIptables()
    iso = Isolation(runner=ipt)
    iso.isolate(EID, [(4, "10.201.0.6", "10.201.0.0/16"), (6, "fd10:201::6", "fd10:201::/112")])
    tag = ["-m", "comment", "--comment", f"cilium-py-docker:{EID}", "-j", "DROP"]
    assert ipt.rules("iptables", "mangle", INTERNAL_CHAIN) == [
        ["-s", "10.201.0.6", "!", "-d", "10.201.0.0/16", *tag],
        ["!", "-s", "10.201.0.0/16", "-d", "10.201.0.6", *tag]]
    assert len(ipt.rules("ip6tables", "mangle", INTERNAL_CHAIN)) == 2
    assert ipt.rules("iptables", "mangle", "FORWARD") == [["-j", INTERNAL_CHAIN]]
    iso.isolate(EID, [(4, "10.201.0.6", "10.201.0.0/16")])  # repeated: replaced, not doubled
    assert len(ipt.rules("iptables", "mangle", INTERNAL_CHAIN)) == 2
    assert ipt.rules("ip6tables", "mangle", INTERNAL_CHAIN) == []


def test_release_and_remove_per_endpoint_and_instance():
    ipt = FakeIptables()
    iso = Isolation(runner=ipt)
    other = Isolation(runner=ipt, chains=Chains("cpyt-e2e-1a2b3c"))
    iso.isolate(EID, [(4, "10.201.0.6", "10.201.0.0/16")])
    other.isolate(OTHER, [(4, "10.202.0.6", "10.202.0.0/16")])
    assert iso.endpoints_with_rules() == {EID} and other.endpoints_with_rules() == {OTHER}
    assert iso.remove_chains() is False  # still in use
    iso.release(EID)
    iso.release(EID)  # idempotent
    assert iso.remove_chains() is True
    assert ipt.rules("iptables", "mangle", "FORWARD") == [["-j", other.chains.internal]]
    assert other.endpoints_with_rules() == {OTHER}
