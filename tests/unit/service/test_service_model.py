"""The service document and the slot list: pure code, no kernel (issue 15)."""

from __future__ import annotations

import collections

import pytest
from marshmallow import ValidationError

from cilium_py.cli.service import parse_backends, split_host_port
from cilium_py.datapath.lb import MAX_SLOTS, LbFrontend, slot_list
from cilium_py.service.model import Service, ServiceRequestSchema


def load(doc: dict) -> Service:
    return Service.from_request(1, ServiceRequestSchema().load(doc))


def test_minimal_service_gets_defaults() -> None:
    svc = load({"frontend-address": {"ip": "10.96.0.1", "port": 80}})
    assert (svc.ip, svc.port, svc.protocol, svc.backends) == ("10.96.0.1", 80, "TCP", ())
    assert svc.affinity == "None" and svc.lb_affinity_timeout == 0
    assert Service.from_json(svc.to_json()) == svc


def test_ipv6_is_canonical_and_affinity_is_kept() -> None:
    svc = load({"frontend-address": {"ip": "FD10:96:0::10", "port": 53, "protocol": "UDP"},
                "backend-addresses": [{"ip": "fd10:200::5", "port": 5353, "weight": 2}],
                "options": {"session-affinity": "ClientIP", "session-affinity-timeout": 30}})
    assert svc.ip == "fd10:96::10" and svc.lb_affinity_timeout == 30
    assert svc.to_api()["backend-addresses"] == [{"ip": "fd10:200::5", "port": 5353,
                                                  "weight": 2}]


@pytest.mark.parametrize(("doc", "field"), [
    ({}, "frontend-address"),
    ({"frontend-address": {"ip": "nope", "port": 80}}, "frontend-address.ip"),
    ({"frontend-address": {"ip": "0.0.0.0", "port": 80}}, "frontend-address.ip"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": "80"}}, "frontend-address.port"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 0}}, "frontend-address.port"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80, "protocol": "SCTP"}},
     "frontend-address.protocol"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80},
      "backend-addresses": [{"ip": "fd10::1", "port": 80}]}, "backend-addresses.0.ip"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80},
      "backend-addresses": [{"ip": "10.0.0.1", "port": 80}, {"ip": "10.0.0.1", "port": 80}]},
     "backend-addresses.1.ip"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80},
      "backend-addresses": [{"ip": "10.0.0.1", "port": 80, "weight": -1}]},
     "backend-addresses.0.weight"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80},
      "options": {"session-affinity-timeout": 0}}, "options.session-affinity-timeout"),
    ({"frontend-address": {"ip": "10.96.0.1", "port": 80}, "frontend": 1}, "frontend"),
])
def test_bad_documents_name_the_field(doc: dict, field: str) -> None:
    from cilium_py.api.errors import flatten_messages

    with pytest.raises(ValidationError) as exc:
        load(doc)
    assert field in flatten_messages(exc.value.messages), exc.value.messages


def test_body_id_must_match_the_url() -> None:
    req = ServiceRequestSchema().load({"id": 2, "frontend-address": {"ip": "10.9.0.1",
                                                                     "port": 1}})
    with pytest.raises(ValidationError) as exc:
        Service.from_request(1, req)
    assert "id" in exc.value.messages


def test_slots_follow_weights() -> None:
    assert slot_list([]) == [] and slot_list([0, 0]) == []
    assert collections.Counter(slot_list([3, 1, 0])) == {0: 3, 1: 1}
    assert slot_list([2, 2, 2]) == [0, 1, 2]  # reduced by the gcd
    assert slot_list([1, 1]) == [0, 1]
    big = slot_list([1000] * 10 + [1])
    assert len(big) <= MAX_SLOTS and 10 in big  # scaled, every backend keeps a slot


def test_frontend_key_is_network_order() -> None:
    key = LbFrontend("10.96.0.1", 80, "UDP").key(3)
    assert bytes(key.addr)[:4] == bytes([10, 96, 0, 1])
    assert bytes(key)[16:18] == (80).to_bytes(2, "big")
    assert (key.proto, key.family, key.slot) == (17, 4, 3)


def test_cli_addresses() -> None:
    assert split_host_port("10.0.0.1:80", "x") == ("10.0.0.1", 80)
    assert split_host_port("[fd10::1]:443", "x") == ("fd10::1", 443)
    assert parse_backends("10.0.0.1:80, 10.0.0.2:81/3") == [
        {"ip": "10.0.0.1", "port": 80}, {"ip": "10.0.0.2", "port": 81, "weight": 3}]
