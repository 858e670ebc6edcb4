"""The driver's Flask app over a fake agent, and dockerd's exact request bodies.

Bodies are the bytes dockerd 20.10 sent in a captured session (Go's encoder: struct
fields in declaration order, map keys sorted), posted the way dockerd posts them: no
Content-Type, and a zero-byte body for argument-less calls.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cilium_py.docker.app import create_app
from cilium_py.docker.state import DriverState

from .fakes import FakeAgent, FakeIsolation, FakePublisher

NID = "743bcb4bfae32facd70f399a06c3727eb2a8fdcafb07a7a20e3acb850e4d165c"
EID = "2d8dd9f68516464284b634a7e753619aae014aa71ef5483b71621cb165210410"
SANDBOX = "/var/run/docker/netns/52c66c9461bd"

# Verbatim request bodies as dockerd sends them.
CREATE_NETWORK_V4 = (
    '{"NetworkID":"' + NID + '","Options":{"com.docker.network.enable_ipv6":false,'
    '"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"CiliumPyLocal",'
    '"Gateway":"10.201.0.1/16","Pool":"10.201.0.0/16"}],"IPv6Data":[]}'
)
CREATE_NETWORK_V6 = (
    '{"NetworkID":"' + NID + '","Options":{"com.docker.network.enable_ipv6":true,'
    '"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"CiliumPyLocal",'
    '"Gateway":"10.201.0.1/16","Pool":"10.201.0.0/16"}],"IPv6Data":[{"AddressSpace":'
    '"CiliumPyLocal","Gateway":"fd10:201::1/112","Pool":"fd10:201::/112"}]}'
)
REQUEST_POOL_V4 = '{"AddressSpace":"CiliumPyLocal","Pool":"","SubPool":"","Options":{},"V6":false}'
REQUEST_POOL_V6 = '{"AddressSpace":"CiliumPyLocal","Pool":"","SubPool":"","Options":{},"V6":true}'
REQUEST_ADDRESS = '{"PoolID":"CiliumPyPoolv4","Address":"","Options":null}'
REQUEST_GATEWAY = (
    '{"PoolID":"CiliumPyPoolv4","Address":"",'
    '"Options":{"RequestAddressType":"com.docker.network.gateway"}}'
)
CREATE_ENDPOINT_V4 = (
    '{"NetworkID":"' + NID + '","EndpointID":"' + EID + '","Interface":{"Address":'
    '"10.201.0.2/32","AddressIPv6":"","MacAddress":""},"Options":{'
    '"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}'
)
JOIN = (
    '{"NetworkID":"' + NID + '","EndpointID":"' + EID + '","SandboxKey":"' + SANDBOX + '",'
    '"Options":{"com.docker.network.endpoint.exposedports":[],'
    '"com.docker.network.portmap":[]}}'
)
PROGRAM_EXTERNAL = (
    '{"NetworkID":"' + NID + '","EndpointID":"' + EID + '","Options":{'
    '"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":9090},{"Proto":6,"Port":80}],'
    '"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":9090,"HostIP":"","HostPort":0,'
    '"HostPortEnd":0},{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,'
    '"HostPortEnd":8080}]}}'
)
NET_EP = '{"NetworkID":"' + NID + '","EndpointID":"' + EID + '"}'


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def ports() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def isolation() -> FakeIsolation:
    return FakeIsolation()


@pytest.fixture
def state(tmp_path) -> DriverState:
    return DriverState(str(tmp_path / "driver.json"))


@pytest.fixture
def client(agent: FakeAgent, state: DriverState, ports: FakePublisher,
           isolation: FakeIsolation):
    return create_app(agent, state, ports, isolation).test_client()


class Caller:
    """Posts like dockerd: raw bytes, no Content-Type."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def raw(self, method: str, body: bytes | str = b"") -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        resp = self.client.post(f"/{method}", data=data,
                                headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        return resp.status_code, json.loads(resp.data)

    def ok(self, method: str, body: bytes | str = b"") -> Any:
        status, doc = self.raw(method, body)
        assert status == 200, doc
        assert "Err" not in doc or not doc["Err"], doc
        return doc

    def err(self, method: str, body: bytes | str = b"", status: int | None = None) -> str:
        got, doc = self.raw(method, body)
        assert got != 200, doc
        if status is not None:
            assert got == status, doc
        assert set(doc) == {"Err"} and doc["Err"], doc
        return doc["Err"]


@pytest.fixture
def dockerd(client) -> Caller:
    return Caller(client)
