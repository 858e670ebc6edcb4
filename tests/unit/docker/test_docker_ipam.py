"""IpamDriver: the agent's pools only, gateway = router, addresses reserved in the agent."""

from __future__ import annotations

import pytest

from cilium_py.errors import Conflict, PoolExhausted

from .conftest import REQUEST_ADDRESS, REQUEST_GATEWAY, REQUEST_POOL_V4, REQUEST_POOL_V6


def test_request_pool_v4_names_the_agent_pool(dockerd, state):
    doc = dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    assert doc == {"PoolID": "CiliumPyPoolv4", "Pool": "10.201.0.0/16",
                   "Data": {"com.docker.network.gateway": "10.201.0.1/16"}}
    assert state.snapshot()["pools"] == {"CiliumPyPoolv4": 1}


def test_request_pool_v6(dockerd):
    doc = dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V6)
    assert doc["PoolID"] == "CiliumPyPoolv6"
    assert doc["Pool"] == "fd10:201::/112"
    assert doc["Data"]["com.docker.network.gateway"] == "fd10:201::1/112"


def test_same_pool_same_id_and_refcounted(dockerd, state):
    a = dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    b = dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    assert a == b
    assert state.snapshot()["pools"]["CiliumPyPoolv4"] == 2
    dockerd.ok("IpamDriver.ReleasePool", '{"PoolID":"CiliumPyPoolv4"}')
    assert state.snapshot()["pools"]["CiliumPyPoolv4"] == 1
    dockerd.ok("IpamDriver.ReleasePool", '{"PoolID":"CiliumPyPoolv4"}')
    dockerd.ok("IpamDriver.ReleasePool", '{"PoolID":"CiliumPyPoolv4"}')  # idempotent
    assert state.snapshot()["pools"] == {}


def test_user_subnet_equal_to_the_agent_pool_is_accepted(dockerd):
    body = ('{"AddressSpace":"CiliumPyLocal","Pool":"fd10:201::/112","SubPool":"",'
            '"Options":{},"V6":true}')
    assert dockerd.ok("IpamDriver.RequestPool", body)["PoolID"] == "CiliumPyPoolv6"


def test_foreign_subnet_is_refused_clearly(dockerd):
    body = ('{"AddressSpace":"CiliumPyLocal","Pool":"10.99.0.0/16","SubPool":"",'
            '"Options":{},"V6":false}')
    err = dockerd.err("IpamDriver.RequestPool", body)
    assert "10.99.0.0/16 is not a cilium-py pool" in err
    assert "10.201.0.0/16" in err


def test_ip_range_that_is_not_the_pool_is_refused(dockerd):
    body = ('{"AddressSpace":"CiliumPyLocal","Pool":"10.201.0.0/16","SubPool":"10.201.1.0/24",'
            '"Options":{},"V6":false}')
    assert "--ip-range" in dockerd.err("IpamDriver.RequestPool", body)


def test_subpool_without_pool_is_invalid(dockerd):
    body = '{"AddressSpace":"CiliumPyLocal","Pool":"","SubPool":"10.201.1.0/24","V6":false}'
    assert "SubPool" in dockerd.err("IpamDriver.RequestPool", body, status=400)


def test_v6_pool_when_agent_has_no_ipv6(dockerd, agent):
    agent.pool6 = None
    assert "--ipv6-pool" in dockerd.err("IpamDriver.RequestPool", REQUEST_POOL_V6)


def test_gateway_request_returns_the_router_without_reserving(dockerd, agent):
    assert dockerd.ok("IpamDriver.RequestAddress", REQUEST_GATEWAY) == {
        "Address": "10.201.0.1/32", "Data": {}}
    assert "reserve" not in agent.names()


def test_foreign_gateway_is_refused(dockerd):
    body = ('{"PoolID":"CiliumPyPoolv4","Address":"10.201.0.254",'
            '"Options":{"RequestAddressType":"com.docker.network.gateway"}}')
    assert "router address 10.201.0.1" in dockerd.err("IpamDriver.RequestAddress", body)


def test_address_is_reserved_in_the_agent_as_a_host_route(dockerd, agent):
    doc = dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)
    assert doc == {"Address": "10.201.0.2/32", "Data": {}}
    family, owner, wanted = agent.calls[-1][1]
    assert (family, wanted) == (4, None)
    assert owner.startswith("docker:CiliumPyPoolv4:")
    assert agent.reservations == {"10.201.0.2": owner}


def test_each_reservation_has_its_own_owner(dockerd, agent):
    dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)
    dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)
    owners = [c[1][1] for c in agent.calls if c[0] == "reserve"]
    assert len(set(owners)) == 2  # the agent keeps one address per owner


def test_specific_address_v6(dockerd, agent):
    body = '{"PoolID":"CiliumPyPoolv6","Address":"fd10:201::99","Options":{}}'
    assert dockerd.ok("IpamDriver.RequestAddress", body)["Address"] == "fd10:201::99/128"


@pytest.mark.parametrize("exc", [Conflict("agent: address 10.201.0.9 is in use"),
                                 PoolExhausted("agent: the IPv4 pool is exhausted")])
def test_agent_refusal_becomes_err(dockerd, agent, exc):
    agent.fail["reserve"] = exc
    assert dockerd.err("IpamDriver.RequestAddress", REQUEST_ADDRESS, status=500) == exc.message


def test_unknown_pool_id(dockerd):
    assert "PoolID" in dockerd.err("IpamDriver.RequestAddress",
                                   '{"PoolID":"nope","Address":""}', status=400)


def test_release_address_frees_the_reservation(dockerd, agent):
    dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)
    dockerd.ok("IpamDriver.ReleaseAddress", '{"PoolID":"CiliumPyPoolv4","Address":"10.201.0.2"}')
    assert agent.reservations == {}
    # Releasing again (or an address an endpoint already gave back) is fine.
    dockerd.ok("IpamDriver.ReleaseAddress", '{"PoolID":"CiliumPyPoolv4","Address":"10.201.0.2"}')


def test_release_of_the_gateway_is_a_no_op(dockerd, agent):
    dockerd.ok("IpamDriver.ReleaseAddress", '{"PoolID":"CiliumPyPoolv4","Address":"10.201.0.1"}')
    assert "release" not in agent.names()


def test_release_address_needs_an_address(dockerd):
    assert "Address" in dockerd.err("IpamDriver.ReleaseAddress", '{"PoolID":"CiliumPyPoolv4"}',
                                    status=400)


def test_an_address_costs_one_agent_call(dockerd, agent):
    """``docker run`` waits on RequestAddress: the pool is not fetched again each time."""
    dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    agent.calls.clear()
    for _ in range(3):
        dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)
    dockerd.ok("IpamDriver.ReleaseAddress", '{"PoolID":"CiliumPyPoolv4","Address":"10.201.0.2"}')
    assert agent.names() == ["reserve", "reserve", "reserve", "release"]


def test_agent_restarted_with_another_pool_is_followed(dockerd, agent):
    dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    agent.pool4 = "10.202.0.0/16"  # the agent came back with another configuration
    assert dockerd.ok("IpamDriver.RequestAddress", REQUEST_ADDRESS)["Address"].startswith(
        "10.202.")
    assert dockerd.ok("IpamDriver.RequestAddress", REQUEST_GATEWAY)["Address"] == "10.202.0.1/32"
    doc = dockerd.ok("IpamDriver.RequestPool", REQUEST_POOL_V4)
    assert doc["Pool"] == "10.202.0.0/16"
