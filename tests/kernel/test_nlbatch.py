"""Batched rtnetlink requests: answers, and a refusal named by its request.

Runs in a worker inside a test-made namespace; what the batch made is checked with
``ip -j``, not with the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cilium_py.netlink import nlbatch
from tests.kernel.test_plumbing import catching
from tests.support import netns as tn

pytestmark = pytest.mark.kernel


@pytest.fixture
def worker() -> Iterator[tuple[str, tn.NetnsWorker]]:
    name = tn.create_netns(tn.unique_name("cpyt-nb"))
    w = tn.NetnsWorker(name)
    try:
        yield name, w
    finally:
        w.close()
        tn.delete_netns(name)


def _make_pair_and_address(host: str, peer: str, addrs: list[str]) -> dict[str, Any]:
    with nlbatch.RtnlSocket() as sock:
        link = (nlbatch.Batch("pair").add("veth", nlbatch.new_veth(host, peer))
                .add(host, nlbatch.get_link(host)).send(sock))[0]
        batch = nlbatch.Batch(f"addressing {host}")
        for addr in addrs:
            batch.add(f"address {addr}", nlbatch.add_address(link["index"], addr, 32))
        batch.send(sock)
        return {"index": link["index"], "mac": link.get("IFLA_ADDRESS")}


def test_batch_makes_everything_and_returns_the_link(worker) -> None:
    name, w = worker
    got = w.call(_make_pair_and_address, "cpyt_a", "cpyt_b", ["10.211.0.1", "10.211.0.2"])
    links = {link["ifname"]: link for link in json.loads(tn.ip(name, "-j", "link"))}
    assert links["cpyt_a"]["ifindex"] == got["index"]
    assert links["cpyt_a"]["address"] == got["mac"] and "UP" in links["cpyt_a"]["flags"]
    addrs = json.loads(tn.ip(name, "-j", "addr", "show", "dev", "cpyt_a"))[0]["addr_info"]
    assert {a["local"] for a in addrs} == {"10.211.0.1", "10.211.0.2"}


def test_a_refusal_names_its_request(worker) -> None:
    name, w = worker
    # The last address of this batch repeats one: the kernel refuses that request only.
    err = w.call(catching, _make_pair_and_address, "cpyt_a", "cpyt_b",
                 ["10.211.0.9", "10.211.0.5", "10.211.0.5"])
    assert not err["ok"]
    assert err["type"] == "Conflict", err
    assert "addressing cpyt_a: address 10.211.0.5" in err["message"], err
    assert "File exists" in err["message"]
    addrs = json.loads(tn.ip(name, "-j", "addr", "show", "dev", "cpyt_a"))[0]["addr_info"]
    assert {a["local"] for a in addrs} == {"10.211.0.9", "10.211.0.5"}
    # The same name again: the veth request itself is refused, as a conflict.
    err = w.call(catching, _make_pair_and_address, "cpyt_a", "cpyt_x", [])
    assert err["type"] == "Conflict" and "pair: veth" in err["message"], err
    assert "cpyt_x" not in tn.ip(name, "-br", "link")


def _delete(name: str) -> list[bool]:
    with nlbatch.RtnlSocket() as sock:
        link = nlbatch.lookup_link(sock, name)
        assert nlbatch.lookup_link(sock, "cpyt_none") is None
        return [nlbatch.delete_link(sock, link["index"], name),
                nlbatch.delete_link(sock, link["index"], name)]


def test_delete_link_is_idempotent(worker) -> None:
    name, w = worker
    w.call(_make_pair_and_address, "cpyt_a", "cpyt_b", [])
    assert w.call(_delete, "cpyt_a") == [True, False]
    assert "cpyt_a" not in tn.ip(name, "-br", "link")
