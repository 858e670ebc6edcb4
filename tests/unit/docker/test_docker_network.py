"""NetworkDriver: network, endpoint, sandbox and external-connectivity calls."""

from __future__ import annotations

import json

import pytest

from cilium_py.errors import NotFound, Unavailable

from .conftest import (
    CREATE_ENDPOINT_V4,
    CREATE_NETWORK_V4,
    CREATE_NETWORK_V6,
    EID,
    JOIN,
    NET_EP,
    NID,
    PROGRAM_EXTERNAL,
)


def _endpoint_body(address: str = "", address6: str = "", mac: str = "") -> str:
    return json.dumps({
        "NetworkID": NID, "EndpointID": EID,
        "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": mac},
        "Options": {"com.docker.network.endpoint.exposedports": [],
                    "com.docker.network.portmap": []},
    }, separators=(",", ":"))


# -- networks ---------------------------------------------------------------------------


def test_create_network_records_pools(dockerd, state):
    assert dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V4) == {}
    assert state.network(NID) == {"ipv4": ["10.201.0.0/16"], "ipv6": [], "enable-ipv6": False,
                                  "internal": False, "generic": {}}


def test_create_v6_network(dockerd, state):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V6)
    assert state.network(NID)["ipv6"] == ["fd10:201::/112"]


def test_network_with_dockers_own_ipam_is_refused(dockerd):
    body = CREATE_NETWORK_V4.replace("10.201.0.0/16", "172.18.0.0/16")
    err = dockerd.err("NetworkDriver.CreateNetwork", body)
    assert "--ipam-driver cilium-py" in err


def test_ipv6_without_a_v6_pool_is_refused(dockerd):
    body = CREATE_NETWORK_V4.replace('enable_ipv6":false', 'enable_ipv6":true')
    assert "--ipv6" in dockerd.err("NetworkDriver.CreateNetwork", body)


def test_delete_network_is_idempotent(dockerd, state):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V4)
    body = '{"NetworkID":"' + NID + '"}'
    assert dockerd.ok("NetworkDriver.DeleteNetwork", body) == {}
    assert dockerd.ok("NetworkDriver.DeleteNetwork", body) == {}
    assert state.network(NID) is None


def test_allocate_and_free_network(dockerd):
    body = ('{"NetworkID":"' + NID + '","Options":{},"IPv4Data":[],"IPv6Data":[]}')
    assert dockerd.ok("NetworkDriver.AllocateNetwork", body) == {"Options": {}}
    assert dockerd.ok("NetworkDriver.FreeNetwork", '{"NetworkID":"' + NID + '"}') == {}


@pytest.mark.parametrize("method", ["DiscoverNew", "DiscoverDelete"])
def test_discovery_notifications_are_accepted(dockerd, method):
    body = '{"DiscoveryType":1,"DiscoveryData":{"Address":"198.51.100.7","self":false}}'
    assert dockerd.ok(f"NetworkDriver.{method}", body) == {}


# -- endpoints --------------------------------------------------------------------------


@pytest.fixture
def network(dockerd):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V4)


def test_create_endpoint_asks_the_agent_for_a_docker_endpoint(dockerd, agent, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    ep_id, body = agent.calls[-1][1]
    assert ep_id == EID
    assert body["netns"] is None and body["docker"] is True
    assert body["labels"] == ["reserved:init"]  # fail closed until the watcher knows
    assert body["addressing"] == {"ipv4": "10.201.0.2", "ipv6": None}


def test_create_endpoint_returns_only_what_dockerd_did_not_set(dockerd, agent, network):
    doc = dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    # dockerd gave the address; the MAC is the agent's (the datapath validates it).
    assert doc == {"Interface": {"MacAddress": agent.endpoints[EID]["mac"]}}


def test_create_endpoint_without_address_returns_the_agents(dockerd, agent, network):
    doc = dockerd.ok("NetworkDriver.CreateEndpoint", _endpoint_body())
    assert doc["Interface"]["Address"] == "10.201.0.2/32"
    # The network has no IPv6 pool: the agent's IPv6 address is not handed to dockerd.
    assert "AddressIPv6" not in doc["Interface"]


def test_create_endpoint_v6(dockerd, agent):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V6)
    doc = dockerd.ok("NetworkDriver.CreateEndpoint",
                     _endpoint_body("10.201.0.2/32", "fd10:201::2/128"))
    assert set(doc["Interface"]) == {"MacAddress"}
    assert agent.calls[-1][1][1]["addressing"] == {"ipv4": "10.201.0.2", "ipv6": "fd10:201::2"}


def test_fixed_mac_is_refused(dockerd, agent, network):
    err = dockerd.err("NetworkDriver.CreateEndpoint",
                      _endpoint_body("10.201.0.2/32", mac="02:42:ac:11:00:02"))
    assert "--mac-address" in err
    assert "put_endpoint" not in agent.names()


def test_agent_refusal_is_err(dockerd, agent, network):
    from cilium_py.errors import Conflict

    agent.fail["put_endpoint"] = Conflict("agent: address 10.201.0.2 is in use",
                                          {"addressing.ipv4": "in use"})
    err = dockerd.err("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4, status=500)
    assert err.startswith("agent: address 10.201.0.2 is in use")


def test_old_agent_without_docker_support_is_rolled_back(dockerd, agent, network):
    agent.docker_support = False
    err = dockerd.err("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert "container-interface" in err
    assert agent.endpoints == {}  # the half-made endpoint was deleted


def test_create_endpoint_records_state(dockerd, state, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert state.endpoint(EID)["ipv4"] == "10.201.0.2"
    assert state.endpoint(EID)["network"] == NID


def test_delete_endpoint(dockerd, agent, state, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP) == {}
    assert agent.endpoints == {}
    assert state.endpoint(EID) is None
    # Already gone: still success (dockerd retries and rolls back with DeleteEndpoint).
    assert dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP) == {}


def test_delete_endpoint_with_agent_down_fails(dockerd, agent, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    agent.fail["delete_endpoint"] = Unavailable("agent: not ready")
    assert dockerd.err("NetworkDriver.DeleteEndpoint", NET_EP, status=500)


def test_endpoint_oper_info(dockerd, agent, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    value = dockerd.ok("NetworkDriver.EndpointOperInfo", NET_EP)["Value"]
    assert value == {"cilium-py.endpoint-id": EID,
                     "com.docker.network.endpoint.macaddress": agent.endpoints[EID]["mac"]}


def test_endpoint_oper_info_does_not_ask_the_agent(dockerd, agent, network):
    # dockerd asks twice per container start: it is answered from the driver's state.
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    agent.fail["get_endpoint"] = Unavailable("agent: down")
    assert dockerd.ok("NetworkDriver.EndpointOperInfo", NET_EP)["Value"]


def test_join_after_the_plugin_lost_its_state_asks_the_agent(dockerd, agent, state, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    with state.edit() as doc:
        doc["endpoints"].clear()
    doc = dockerd.ok("NetworkDriver.Join", JOIN)
    assert doc["InterfaceName"]["SrcName"] == "tmp" + EID[:11]
    assert ("get_endpoint", EID) in agent.calls


# -- join / leave -----------------------------------------------------------------------


def test_join_hands_over_the_interface_gateway_and_routes(dockerd, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    doc = dockerd.ok("NetworkDriver.Join", JOIN)
    assert doc == {
        "InterfaceName": {"SrcName": "tmp" + EID[:11], "DstPrefix": "eth"},
        "StaticRoutes": [
            {"Destination": "10.201.0.1/32", "RouteType": 1},
            # The pool via the router: what keeps a container that has its default route
            # on another network (Docker's bridge) on its cilium-py interface.
            {"Destination": "10.201.0.0/16", "RouteType": 0, "NextHop": "10.201.0.1"},
        ],
        "DisableGatewayService": True,
        "Gateway": "10.201.0.1",
    }


def test_join_v6_network(dockerd):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_V6)
    dockerd.ok("NetworkDriver.CreateEndpoint", _endpoint_body("10.201.0.2/32", "fd10:201::2/128"))
    doc = dockerd.ok("NetworkDriver.Join", JOIN)
    assert doc["Gateway"] == "10.201.0.1"
    assert doc["GatewayIPv6"] == "fd10:201::1"
    assert {"Destination": "fd10:201::1/128", "RouteType": 1} in doc["StaticRoutes"]
    assert {"Destination": "fd10:201::/112", "RouteType": 0,
            "NextHop": "fd10:201::1"} in doc["StaticRoutes"]
    # Default routes come from Gateway/GatewayIPv6; a duplicate would fail in dockerd.
    assert all(not r["Destination"].endswith("/0") for r in doc["StaticRoutes"])


def test_join_of_unknown_endpoint_is_err_but_never_404(dockerd, agent, network):
    err = dockerd.err("NetworkDriver.Join", JOIN, status=500)
    assert "unknown to the cilium-py agent" in err


def test_join_of_a_non_docker_endpoint(dockerd, agent, network):
    agent.docker_support = False
    agent.put_endpoint(EID, {"netns": "/var/run/netns/x", "addressing": {}})
    assert "container-interface" in dockerd.err("NetworkDriver.Join", JOIN)


def test_leave(dockerd, network):
    assert dockerd.ok("NetworkDriver.Leave", NET_EP) == {}


# -- external connectivity ----------------------------------------------------------------


def test_program_external_connectivity_publishes_and_reports(dockerd, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL) == {}
    assert [(b.port, b.host_port) for b in ports.published[EID]] == [(9090, 49153), (80, 8080)]
    value = dockerd.ok("NetworkDriver.EndpointOperInfo", NET_EP)["Value"]
    assert value["com.docker.network.portmap"][1] == {
        "Proto": 6, "IP": "10.201.0.2", "Port": 80, "HostIP": "", "HostPort": 8080,
        "HostPortEnd": 8080}
    assert value["com.docker.network.endpoint.exposedports"] == [
        {"Proto": 6, "Port": 9090}, {"Proto": 6, "Port": 80}]


def test_program_external_without_ports(dockerd, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    body = JOIN.replace(',"SandboxKey":"/var/run/docker/netns/52c66c9461bd"', "")
    assert dockerd.ok("NetworkDriver.ProgramExternalConnectivity", body) == {}
    assert ports.published[EID] == []


def test_program_external_after_plugin_lost_its_state(dockerd, agent, state, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    with state.edit() as doc:
        doc["endpoints"].clear()
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    assert state.endpoint(EID)["ipv4"] == "10.201.0.2"  # learnt back from the agent


def test_program_external_rejects_bad_bindings(dockerd, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    body = PROGRAM_EXTERNAL.replace('"Proto":6,"IP"', '"Proto":47,"IP"', 1)
    assert "protocol" in dockerd.err("NetworkDriver.ProgramExternalConnectivity", body, 400)


def test_removing_a_container_without_ports_runs_no_port_revocation(dockerd, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", NET_EP)
    dockerd.ok("NetworkDriver.RevokeExternalConnectivity", NET_EP)
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert ports.revoked == []


def test_removing_a_container_with_ports_revokes_them(dockerd, ports, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    dockerd.ok("NetworkDriver.RevokeExternalConnectivity", NET_EP)
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert EID not in ports.published
    assert ports.revoked[:1] == [EID]


def test_ports_are_revoked_when_the_plugin_lost_its_state(dockerd, state, ports, network):
    """Rules carry the endpoint id, so the sweep works without the plugin's memory."""
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    with state.edit() as doc:
        doc["endpoints"].clear()
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert ports.revoked == [EID]


def test_a_failed_publish_is_still_revoked(dockerd, ports, state, network, monkeypatch):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)

    def crash(*_):
        raise RuntimeError("killed half-way through writing rules")

    monkeypatch.setattr(ports, "publish", crash)
    dockerd.err("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert ports.revoked == [EID]


def test_revoke_external_connectivity(dockerd, ports, state, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    assert dockerd.ok("NetworkDriver.RevokeExternalConnectivity", NET_EP) == {}
    assert EID not in ports.published
    assert state.endpoint(EID)["ports"] == []


def test_join_unknown_agent_error_maps_once(dockerd, agent, network):
    agent.fail["get_endpoint"] = NotFound("agent: endpoint x not found")
    status, doc = dockerd.raw("NetworkDriver.Join", JOIN)
    assert status == 500 and "Err" in doc


def test_second_cilium_network_in_one_container_is_refused(dockerd, agent, state, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.Join", JOIN)
    other = "9" * 64
    dockerd.ok("NetworkDriver.CreateEndpoint",
               CREATE_ENDPOINT_V4.replace(EID, other).replace("10.201.0.2/32", "10.201.0.3/32"))
    err = dockerd.err("NetworkDriver.Join", JOIN.replace(EID, other))
    assert "already on a cilium-py network" in err
    # After Leave the sandbox is free again (docker network disconnect + connect).
    dockerd.ok("NetworkDriver.Leave", NET_EP)
    dockerd.ok("NetworkDriver.Join", JOIN.replace(EID, other))
    assert state.endpoint(other)["sandbox"] == "/var/run/docker/netns/52c66c9461bd"


def test_v4_network_publishes_only_ipv4(dockerd, ports, state, network):
    # The fake agent, like the real one, also holds an IPv6 address for the endpoint.
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert state.endpoint(EID)["ipv6"] is None
    dockerd.ok("NetworkDriver.ProgramExternalConnectivity", PROGRAM_EXTERNAL)
    assert state.endpoint(EID)["ipv6"] is None


# -- internal networks (issue 11 item 7) ----------------------------------------------

CREATE_NETWORK_INTERNAL = CREATE_NETWORK_V4.replace(
    '"com.docker.network.generic":{}}', '"com.docker.network.generic":{},'
    '"com.docker.network.internal":true}')


def test_an_internal_network_gets_no_gateway_but_its_pool_route(dockerd, isolation):
    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_INTERNAL)
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert isolation.isolated == {EID: [(4, "10.201.0.2", "10.201.0.0/16")]}
    doc = dockerd.ok("NetworkDriver.Join", JOIN)
    assert "Gateway" not in doc and "GatewayIPv6" not in doc
    assert {"Destination": "10.201.0.0/16", "RouteType": 0,
            "NextHop": "10.201.0.1"} in doc["StaticRoutes"]
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert isolation.released == [EID] and isolation.isolated == {}


def test_endpoints_of_other_networks_are_not_isolated(dockerd, isolation, network):
    dockerd.ok("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    dockerd.ok("NetworkDriver.DeleteEndpoint", NET_EP)
    assert isolation.isolated == {} and isolation.released == []


def test_a_failed_isolation_leaves_no_endpoint(dockerd, agent, isolation, monkeypatch):
    from cilium_py.errors import Unavailable

    dockerd.ok("NetworkDriver.CreateNetwork", CREATE_NETWORK_INTERNAL)

    def broken(eid, addresses):
        raise Unavailable("iptables -t mangle -N CILIUM_PY_DOCKER_INT failed: no mangle")

    monkeypatch.setattr(isolation, "isolate", broken)
    assert "no mangle" in dockerd.err("NetworkDriver.CreateEndpoint", CREATE_ENDPOINT_V4)
    assert agent.endpoints == {}
