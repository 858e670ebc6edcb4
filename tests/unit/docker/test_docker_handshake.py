"""Activation, capabilities and the error path, posted exactly as dockerd posts them."""

from __future__ import annotations

import pytest

from cilium_py.docker.protocol import PLUGIN_CONTENT_TYPE
from cilium_py.errors import Unavailable


def test_activate_with_zero_byte_body_lists_both_drivers(dockerd):
    assert dockerd.ok("Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}


def test_reply_content_type_is_the_plugin_media_type(client):
    resp = client.post("/Plugin.Activate", data=b"")
    assert resp.headers["Content-Type"] == PLUGIN_CONTENT_TYPE


def test_network_capabilities_are_local(dockerd):
    assert dockerd.ok("NetworkDriver.GetCapabilities") == {
        "Scope": "local", "ConnectivityScope": "local"}


def test_ipam_capabilities(dockerd):
    assert dockerd.ok("IpamDriver.GetCapabilities") == {
        "RequiresMACAddress": False, "RequiresRequestReplay": False}


def test_default_address_spaces(dockerd):
    assert dockerd.ok("IpamDriver.GetDefaultAddressSpaces") == {
        "LocalDefaultAddressSpace": "CiliumPyLocal",
        "GlobalDefaultAddressSpace": "CiliumPyGlobal"}


def test_json_null_body_counts_as_empty(dockerd):
    assert dockerd.ok("NetworkDriver.GetCapabilities", b"null")["Scope"] == "local"


def test_unknown_method_is_404_with_err(dockerd):
    # 404 tells dockerd "not implemented"; it is reserved for unknown methods.
    err = dockerd.err("NetworkDriver.Teleport", b"{}", status=404)
    assert "NetworkDriver.Teleport" in err


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b'"x"'])
def test_malformed_body_is_400_with_err(dockerd, body):
    err = dockerd.err("NetworkDriver.CreateNetwork", body, status=400)
    assert "JSON" in err or "object" in err


def test_missing_field_is_400_naming_it(dockerd):
    err = dockerd.err("NetworkDriver.DeleteNetwork", b"{}", status=400)
    assert "NetworkID" in err


def test_get_is_refused_with_err(client):
    resp = client.get("/Plugin.Activate")
    assert resp.status_code == 405
    assert resp.get_json(force=True)["Err"]


def test_agent_down_is_500_err_not_404(dockerd, agent):
    agent.fail["ipam_status"] = Unavailable("cannot reach the agent at /x: is it running?")
    err = dockerd.err("IpamDriver.RequestPool",
                      b'{"AddressSpace":"CiliumPyLocal","Pool":"","SubPool":"",'
                      b'"Options":{},"V6":false}', status=500)
    assert "cannot reach the agent" in err


def test_unexpected_exception_is_500_err(dockerd, agent, monkeypatch):
    def boom():
        raise RuntimeError("secret detail")

    monkeypatch.setattr(agent, "ipam_status", boom)
    err = dockerd.err("IpamDriver.RequestPool", b'{"V6":false}', status=500)
    assert "RuntimeError" in err and "secret detail" not in err
