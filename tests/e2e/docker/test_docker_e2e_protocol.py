"""The plugin socket answers malformed and unknown calls with {"Err": ...}."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_activate_with_an_empty_body(docker_env):
    status, doc = docker_env.plugin.post("Plugin.Activate")
    assert status == 200
    assert doc == {"Implements": ["NetworkDriver", "IpamDriver"]}


def test_unknown_method(docker_env):
    status, doc = docker_env.plugin.post("NetworkDriver.Frobnicate", b"{}")
    assert status == 404 and doc["Err"]


@pytest.mark.parametrize("body", [b"{", b"[]", b"\x00\x01"])
def test_malformed_body(docker_env, body):
    status, doc = docker_env.plugin.post("NetworkDriver.CreateEndpoint", body)
    assert status == 400 and doc["Err"]


def test_join_of_an_unknown_endpoint(docker_env):
    status, doc = docker_env.plugin.post(
        "NetworkDriver.Join",
        b'{"NetworkID":"n","EndpointID":"' + b"f" * 64 + b'","SandboxKey":"/x","Options":{}}')
    assert status == 500
    assert "unknown to the cilium-py agent" in doc["Err"]
