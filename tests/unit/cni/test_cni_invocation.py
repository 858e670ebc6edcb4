"""The CNI_* environment and the stdin config, with the spec's codes for each fault."""

from __future__ import annotations

import json

import pytest

from cilium_py.cni.errors import CNIError
from cilium_py.cni.invocation import (
    DEFAULT_AGENT_SOCKET,
    decode,
    parse_netconf,
    peek_version,
    read_environment,
)

ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def code_of(fn, *a) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(CNIError) as exc:
        fn(*a)
    return exc.value.code


def test_add_environment() -> None:
    env = read_environment({**ADD_ENV, "CNI_ARGS": "K=V"})
    assert (env.command, env.container_id, env.netns, env.ifname, env.args) == (
        "ADD", "abc123", "/var/run/netns/x", "eth0", "K=V")


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_add_and_check_need_container_netns_ifname(missing: str) -> None:
    for command in ("ADD", "CHECK"):
        env = {k: v for k, v in ADD_ENV.items() if k != missing}
        env["CNI_COMMAND"] = command
        with pytest.raises(CNIError) as exc:
            read_environment(env)
        assert exc.value.code == 4
        assert missing in exc.value.msg


def test_del_needs_no_netns_and_gc_status_version_need_nothing() -> None:
    read_environment({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"})
    for command in ("GC", "STATUS", "VERSION"):
        assert read_environment({"CNI_COMMAND": command}).command == command


@pytest.mark.parametrize("override", [
    {"CNI_COMMAND": "ATTACH"},
    {"CNI_COMMAND": ""},
    {"CNI_CONTAINERID": "-starts-with-dash"},
    {"CNI_CONTAINERID": "has space"},
    {"CNI_CONTAINERID": "ünïcode"},
    {"CNI_IFNAME": "a-very-long-ifname0"},
    {"CNI_IFNAME": "eth/0"},
    {"CNI_IFNAME": ".."},
    {"CNI_NETNS": "relative/path"},
])
def test_invalid_environment_is_code_4(override: dict[str, str]) -> None:
    assert code_of(read_environment, {**ADD_ENV, **override}) == 4


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b'"string"', b"\xff\xfe"])
def test_undecodable_stdin_is_code_6(data: bytes) -> None:
    assert code_of(decode, data) == 6


def test_minimal_and_full_config() -> None:
    conf = parse_netconf({"cniVersion": "1.0.0", "name": "n", "type": "cilium-py-cni"})
    assert conf.agent_socket == DEFAULT_AGENT_SOCKET
    assert conf.prev_result is None and conf.valid_attachments is None
    full = parse_netconf({
        "cniVersion": "1.1.0", "name": "n", "type": "cilium-py-cni",
        "agent-socket": "/run/a.sock", "log-file": None, "log-level": "debug",
        "args": {"cni": {}}, "dns": {"nameservers": ["10.0.0.10"]},
        "prevResult": {"ips": []},
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
    })
    assert full.agent_socket == "/run/a.sock"
    assert full.log_file is None and full.log_level == "debug"
    assert full.valid_attachments == [("c1", "eth0")]
    assert full.dns == {"nameservers": ["10.0.0.10"]}


def test_missing_version_means_0_1_0() -> None:
    """The Mesos isolator's examples carry no cniVersion."""
    assert parse_netconf({"name": "n", "type": "cilium-py-cni"}).cni_version == "0.1.0"


def test_old_spelling_of_valid_attachments() -> None:
    conf = parse_netconf({"cniVersion": "1.1.0",
                          "cni.dev/attachments": [{"containerID": "c", "ifname": "e"}]})
    assert conf.valid_attachments == [("c", "e")]


@pytest.mark.parametrize("doc,code", [
    ({"cniVersion": "0.9.9"}, 1),
    ({"cniVersion": "1.0.0", "ipam": {"type": "host-local"}}, 2),
    ({"cniVersion": "1.0.0", "agent-socket": "relative.sock"}, 7),
    ({"cniVersion": "1.0.0", "agent-socket": 5}, 7),
    ({"cniVersion": "1.0.0", "args": []}, 7),
    ({"cniVersion": "1.0.0", "prevResult": "x"}, 7),
    ({"cniVersion": "1.0.0", "log-level": "loud"}, 7),
    ({"cniVersion": "1.0.0", "log-file": 3}, 7),
    ({"cniVersion": "1.1.0", "cni.dev/valid-attachments": {"c": "e"}}, 7),
    ({"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "c"}]}, 7),
])
def test_bad_configs(doc: dict, code: int) -> None:
    assert code_of(parse_netconf, doc) == code


def test_empty_ipam_section_is_tolerated() -> None:
    parse_netconf({"cniVersion": "1.0.0", "ipam": {}})


def test_peek_version_for_error_wording() -> None:
    assert peek_version(json.dumps({"cniVersion": "0.2.0"}).encode()) == "0.2.0"
    assert peek_version(b"not json") == "1.1.0"
    assert peek_version(b'{"cniVersion": "7.0.0"}') == "1.1.0"
