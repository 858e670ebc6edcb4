"""The one mapping from agent answers to CNI error codes."""

from __future__ import annotations

import json

import pytest

from cilium_py.client.errors import refusal
from cilium_py.cni import errors
from cilium_py.cni.errors import CNIError


def from_agent(status: int, body: object, action: str) -> CNIError:
    """An agent's error answer, through the client's mapping and then the plugin's."""
    raw = b"" if body is None else json.dumps(body).encode()
    return errors.from_agent(refusal(status, raw), action)


def test_error_json_has_the_spec_fields() -> None:
    err = CNIError(7, "bad config", "because")
    assert err.to_json("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "bad config",
                                    "details": "because"}


def test_well_known_codes_have_the_spec_numbers() -> None:
    assert (errors.INCOMPATIBLE_VERSION, errors.UNSUPPORTED_FIELD, errors.UNKNOWN_CONTAINER,
            errors.INVALID_ENV, errors.IO_FAILURE, errors.DECODING_FAILURE,
            errors.INVALID_NETWORK_CONFIG, errors.TRY_AGAIN_LATER) == (1, 2, 3, 4, 5, 6, 7, 11)
    assert (errors.PLUGIN_NOT_AVAILABLE, errors.PLUGIN_NOT_AVAILABLE_LIMITED) == (50, 51)
    assert min(errors.INTERNAL, errors.CHECK_FAILED, errors.CONFLICT) >= 100


@pytest.mark.parametrize("status,body,code", [
    (400, {"error": "netns /x does not exist", "fields": {"netns": "missing"}}, 4),
    (400, {"error": "bad", "fields": {"interface-name": "too long"}}, 4),
    (400, {"error": "bad", "fields": {"id": "not url safe"}}, 4),
    (400, {"error": "bad label", "fields": {"labels.0": "invalid"}}, 7),
    (400, {"error": "malformed"}, 7),
    (404, {"error": "endpoint x not found", "fields": {"id": "x"}}, 3),
    (409, {"error": "the IPv4 pool 10.200.0.0/16 is exhausted (65534 addresses in use)"}, 11),
    (409, {"error": "whatever", "code": "pool-exhausted"}, 11),
    (409, {"error": "address 10.200.0.5 is held by another endpoint"}, 102),
    (503, {"error": "the BPF datapath is not running"}, 11),
    (502, {"error": "bad gateway"}, 11),
    (504, {"error": "gateway timeout"}, 11),
    (500, {"error": "internal error: KeyError"}, 100),
    (418, None, 100),
])
def test_agent_statuses_map_to_cni_codes(status: int, body: object, code: int) -> None:
    err = from_agent(status, body, "create endpoint e1")
    assert err.code == code
    assert err.msg.startswith("create endpoint e1: ")


def test_message_is_the_agents_error_and_details_its_fields() -> None:
    err = from_agent(409, {"error": "address in use", "fields": {"b": "2", "a": "1"}}, "make")
    assert (err.msg, err.details) == ("make: address in use", "a: 1; b: 2")
    assert from_agent(418, None, "make").details == "agent answered HTTP 418"
    assert from_agent(418, None, "make").msg == "make: HTTP 418"


def test_env_errors_name_the_variable() -> None:
    err = from_agent(400, {"error": "no netns", "fields": {"netns": "x"}}, "create")
    assert "CNI_NETNS" in err.msg
    assert err.details == "netns: x"


def test_unreachable_agent_is_try_again_later() -> None:
    err = errors.AgentUnreachable("/run/x.sock", "connect: refused")
    assert err.code == errors.TRY_AGAIN_LATER
    assert "/run/x.sock" in err.msg
