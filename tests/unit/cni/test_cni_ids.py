"""Endpoint ids derived from (container id, ifname)."""

from __future__ import annotations

import re

from cilium_py.cni.ids import endpoint_id, is_cni_endpoint

URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


def test_plain_form_for_runtime_ids() -> None:
    cid = "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755"
    assert endpoint_id(cid, "eth0") == f"{cid}-eth0"
    assert endpoint_id("6d4b1f3e-0d2c-4b8a-9c1e-7f2a5b3c4d5e", "eth0").endswith("-eth0")


def test_two_interfaces_of_one_container_differ() -> None:
    assert endpoint_id("c1", "eth0") != endpoint_id("c1", "net1")


def test_unsafe_or_long_ids_are_hashed_and_url_safe() -> None:
    long_id = "a" * 200
    for cid, ifname in [(long_id, "eth0"), ("c:1", "eth0"), ("c1", "eth0@x"), ("c~1", "e")]:
        ep = endpoint_id(cid, ifname)
        assert URL_SAFE.match(ep), ep
        assert ep.startswith("~")
    # sanitising would map these two to one id; hashing keeps them apart
    assert endpoint_id("c:1", "eth0") != endpoint_id("c_1", "eth0")
    assert endpoint_id(long_id, "eth0") == endpoint_id(long_id, "eth0")


def test_is_cni_endpoint_recognises_our_ids_only() -> None:
    ours = {"id": "c1-eth0", "container-id": "c1", "interface-name": "eth0"}
    docker = {"id": "9f" * 32, "container-id": "c1", "interface-name": "eth0"}
    assert is_cni_endpoint(ours)
    assert not is_cni_endpoint(docker)
    assert not is_cni_endpoint({"id": "-eth0", "container-id": "", "interface-name": "eth0"})
