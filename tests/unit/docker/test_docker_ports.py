"""Port publishing rules, driven through a fake iptables that keeps real rule text."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

import pytest

from cilium_py.docker.ports import (
    FWD_CHAIN,
    NAT_CHAIN,
    Chains,
    IptablesPublisher,
    Request,
    instance_of,
    requests_from,
)
from cilium_py.errors import Conflict, InvalidInput, Unavailable

EID = "f4bfdb2ac6395e250a7a9ace048a7707f4ee62d4547485d126aaf1fedcbe184b"
OTHER = "0" * 64


class FakeIptables:
    """Just enough of iptables: -N, -I, -A, -C, -D and -S per (tool, table, chain)."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str, str], list[list[str]]] = {}
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.commands.append(argv)
        tool, rest = argv[0], argv[3:]  # drop "-w 5"
        table = "filter"
        if rest[:1] == ["-t"]:
            table, rest = rest[1], rest[2:]
        if rest == ["-S"]:  # the whole table
            return "".join(self._save(c, r) for (t, tb, c), r in self.chains.items()
                           if (t, tb) == (tool, table))
        op, chain, rule = rest[0], rest[1], rest[2:]
        key = (tool, table, chain)
        if op == "-N":
            if key in self.chains:
                raise Unavailable("Chain already exists.")
            self.chains[key] = []
            return ""
        if op in ("-F", "-X"):
            if key not in self.chains:
                raise Unavailable(f"No chain/target/match by that name: {chain}")
            if op == "-F":
                self.chains[key] = []
            else:
                del self.chains[key]
            return ""
        rules = self.chains.setdefault(key, []) if chain in ("PREROUTING", "OUTPUT",
                                                              "FORWARD") else self.chains.get(key)
        if rules is None:
            raise Unavailable(f"No chain/target/match by that name: {chain}")
        if op == "-I":
            rules.insert(int(rule[0]) - 1, rule[1:])
        elif op == "-A":
            rules.append(rule)
        elif op == "-C":
            if rule not in rules:
                raise Unavailable("Bad rule (does a matching rule exist in that chain?).")
        elif op == "-D":
            rules.remove(rule)
        elif op == "-S":
            return self._save(chain, rules)
        return ""

    @staticmethod
    def _save(chain: str, rules: list[list[str]]) -> str:
        lines = [f"-N {chain}"]
        for r in rules:
            words = [f'"{w}"' if w.startswith("cilium-py-docker") else w for w in r]
            lines.append(" ".join(["-A", chain, *words]))
        return "\n".join(lines) + "\n"

    def rules(self, tool: str, table: str, chain: str) -> list[list[str]]:
        return self.chains.get((tool, table, chain), [])


@pytest.fixture
def ipt() -> FakeIptables:
    return FakeIptables()


@pytest.fixture
def publisher(ipt, monkeypatch) -> IptablesPublisher:
    def probe(proto: int, family: int, host_ip: str, port: int) -> OSError | None:
        if host_ip == "203.0.113.9":
            return OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if port in (49153, 18088):  # "a host process listens there"
            return OSError(errno.EADDRINUSE, "Address already in use")
        return None

    monkeypatch.setattr("cilium_py.docker.ports._probe", probe)
    return IptablesPublisher(runner=ipt, hold=holds)


class FakeHolds:
    """Records the ports a publisher reserves; ``open`` are the ones still held."""

    def __init__(self) -> None:
        self.open: list[tuple[int, int, str, int]] = []

    def __call__(self, proto: int, family: int, host_ip: str, port: int) -> FakeHold:
        return FakeHold(self, (proto, family, host_ip, port))


class FakeHold:
    def __init__(self, owner: FakeHolds, key: tuple[int, int, str, int]) -> None:
        self.owner, self.key = owner, key
        owner.open.append(key)

    def close(self) -> None:
        self.owner.open.remove(self.key)


holds = FakeHolds()


@pytest.fixture(autouse=True)
def _fresh_holds():
    holds.open.clear()
    yield


def test_publish_v4_writes_dnat_and_forward_rules(publisher, ipt):
    out = publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8080, 8080)])
    assert [(b.port, b.host_port) for b in out] == [(80, 8080)]
    nat = ipt.rules("iptables", "nat", NAT_CHAIN)
    assert nat == [["-p", "tcp", "--dport", "8080", "-m", "comment", "--comment",
                    f"cilium-py-docker:{EID}", "-j", "DNAT", "--to-destination",
                    "10.201.0.6:80"]]
    assert len(ipt.rules("iptables", "filter", FWD_CHAIN)) == 2
    assert ipt.rules("iptables", "nat", "PREROUTING") == [
        ["-m", "addrtype", "--dst-type", "LOCAL", "-j", NAT_CHAIN]]
    assert ipt.rules("iptables", "filter", "FORWARD") == [["-j", FWD_CHAIN]]
    assert ipt.rules("ip6tables", "nat", NAT_CHAIN) == []


def test_publish_dual_stack_without_host_ip(publisher, ipt):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(17, 53, "", 5353)])
    v6 = ipt.rules("ip6tables", "nat", NAT_CHAIN)
    assert v6[0][-1] == "[fd10:201::6]:53" and v6[0][1] == "udp"


def test_host_ip_selects_the_family(publisher, ipt):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "fd00::5", 8080)])
    assert ipt.rules("iptables", "nat", NAT_CHAIN) == []
    assert ipt.rules("ip6tables", "nat", NAT_CHAIN)[0][:2] == ["-d", "fd00::5"]


@pytest.mark.parametrize(("host_ip", "tool"), [("0.0.0.0", "iptables"), ("::", "ip6tables")])
def test_the_unspecified_address_means_every_address_of_its_family(publisher, ipt, host_ip,
                                                                   tool):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, host_ip, 8080)])
    other = "ip6tables" if tool == "iptables" else "iptables"
    assert ipt.rules(other, "nat", NAT_CHAIN) == []
    assert ipt.rules(tool, "nat", NAT_CHAIN)[0][:4] == ["-p", "tcp", "--dport", "8080"]


@pytest.mark.parametrize("host_ip", ["127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_is_refused_with_what_to_do_instead(publisher, ipt, host_ip):
    with pytest.raises(InvalidInput, match="loopback") as err:
        publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, host_ip, 8080)])
    assert "fromEntities" in err.value.message
    assert publisher.endpoints_with_rules() == set()


def test_a_port_a_host_process_holds_is_refused(publisher):
    with pytest.raises(Conflict, match="host port 18088/tcp is in use on this host"):
        publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 18088)])
    assert publisher.endpoints_with_rules() == set()


def test_an_address_the_host_does_not_have_is_refused(publisher):
    with pytest.raises(InvalidInput, match="not an address of this host"):
        publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "203.0.113.9", 8080)])


@pytest.mark.parametrize(("kind", "proto"), [(socket.SOCK_STREAM, 6), (socket.SOCK_DGRAM, 17)])
def test_probe_finds_a_bound_port(kind, proto):
    from cilium_py.docker.ports import _probe

    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        for host_ip in ("", "127.0.0.1"):
            failure = _probe(proto, 4, host_ip, port)
            assert failure is not None and failure.errno == errno.EADDRINUSE
    assert _probe(proto, 4, "127.0.0.1", port) is None


def test_host_ip_of_a_missing_family_is_refused(publisher):
    with pytest.raises(InvalidInput):
        publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "::1", 8080)])


def test_any_host_port_picks_a_free_ephemeral_port(publisher):
    out = publisher.publish(EID, "10.201.0.6", None, [Request(6, 9090), Request(6, 9091)])
    assert [b.host_port for b in out] == [49154, 49155]  # 49153 is "in use"


def test_range_picks_the_first_unpublished_port(publisher):
    publisher.publish(OTHER, "10.201.0.7", None, [Request(6, 80, "", 8000)])
    out = publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8000, 8002)])
    assert out[0].host_port == 8001


def test_a_port_published_twice_is_a_conflict(publisher):
    publisher.publish(OTHER, "10.201.0.7", None, [Request(6, 80, "", 8080)])
    with pytest.raises(Conflict):
        publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8080)])


def test_failure_midway_leaves_no_rules(publisher, ipt):
    publisher.publish(OTHER, "10.201.0.7", None, [Request(6, 80, "", 8081)])
    with pytest.raises(Conflict):
        publisher.publish(EID, "10.201.0.6", None,
                          [Request(6, 80, "", 8080), Request(6, 81, "", 8081)])
    assert EID not in publisher.endpoints_with_rules()


def test_publish_is_idempotent(publisher, ipt):
    for _ in range(2):
        publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8080)])
    assert len(ipt.rules("iptables", "nat", NAT_CHAIN)) == 1


def test_revoke_removes_only_that_endpoints_rules(publisher, ipt):
    publisher.publish(OTHER, "10.201.0.7", "fd10:201::7", [Request(6, 80, "", 8081)])
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "", 8080)])
    publisher.revoke(EID)
    assert publisher.endpoints_with_rules() == {OTHER}
    assert len(ipt.rules("ip6tables", "filter", FWD_CHAIN)) == 2
    publisher.revoke(EID)  # idempotent


def test_revoke_without_chains_is_fine(publisher):
    publisher.revoke(EID)


def test_requests_from_docker_options():
    reqs = requests_from({"com.docker.network.portmap": [
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "0.0.0.0", "HostPort": 8080,
         "HostPortEnd": 8080}]}, "com.docker.network.portmap")
    assert reqs == [Request(6, 80, "0.0.0.0", 8080, 8080)]
    assert requests_from({}, "com.docker.network.portmap") == []


@pytest.mark.parametrize("doc", [{"Proto": 6, "Port": 0}, {"Proto": 6, "Port": 70000},
                                 {"Proto": 6, "Port": 80, "HostIP": "nope"},
                                 {"Proto": "tcp", "Port": 80}, "80"])
def test_bad_bindings(doc):
    with pytest.raises(InvalidInput):
        requests_from({"k": [doc]}, "k")


def test_remove_chains_only_when_unused(publisher, ipt):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "", 8080)])
    assert publisher.remove_chains() is False
    publisher.revoke(EID)
    assert publisher.remove_chains() is True
    assert ipt.rules("iptables", "nat", "PREROUTING") == []
    assert ipt.rules("ip6tables", "filter", "FORWARD") == []


# -- instances (issue 11 item 9) ------------------------------------------------------


@pytest.fixture
def second(ipt) -> IptablesPublisher:
    return IptablesPublisher(runner=ipt, chains=Chains("cpyt-e2e-1a2b3c"), hold=holds)


def test_the_installed_instance_keeps_its_chain_names():
    assert (Chains().nat, Chains().fwd) == (NAT_CHAIN, FWD_CHAIN)
    assert Chains(instance_of("/run/docker/plugins/cilium-py.sock")) == Chains()


def test_another_instance_has_chains_of_its_own():
    chains = Chains(instance_of("/run/docker/plugins/cpyt-e2e-1a2b3c.sock"))
    assert chains.nat.startswith(NAT_CHAIN + "_") and chains.fwd.startswith(FWD_CHAIN + "_")
    assert len(chains.nat) <= 28 and len(chains.fwd) <= 28  # iptables' limit
    assert chains.comment_prefix == "cilium-py-docker@cpyt-e2e-1a2b3c:"
    assert chains.nat != Chains("cpyt-e2e-ffffff").nat


def test_an_instance_sees_and_revokes_only_its_own_rules(publisher, second, ipt):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "", 8080)])
    second.publish(OTHER, "10.202.0.6", None, [Request(6, 80, "", 8081)])
    assert ipt.rules("iptables", "nat", second.chains.nat)[0][-1] == "10.202.0.6:80"
    assert second.endpoints_with_rules() == {OTHER}
    assert publisher.endpoints_with_rules() == {EID}
    second.revoke(EID)  # what a reconciliation does with endpoints its agent lacks
    assert publisher.endpoints_with_rules() == {EID}
    assert len(ipt.rules("iptables", "nat", NAT_CHAIN)) == 1


def test_a_port_another_instance_published_is_a_conflict(publisher, second):
    publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8080)])
    with pytest.raises(Conflict):
        second.publish(OTHER, "10.202.0.6", None, [Request(6, 80, "", 8080)])


def test_removing_an_instances_chains_leaves_the_others(publisher, second, ipt):
    publisher.publish(EID, "10.201.0.6", None, [Request(6, 80, "", 8080)])
    second.publish(OTHER, "10.202.0.6", None, [Request(6, 80, "", 8081)])
    second.revoke(OTHER)
    assert second.remove_chains() is True
    assert ipt.rules("iptables", "nat", "PREROUTING") == [
        ["-m", "addrtype", "--dst-type", "LOCAL", "-j", NAT_CHAIN]]
    assert publisher.endpoints_with_rules() == {EID}


def test_published_host_ports_stay_reserved_until_revoked(publisher):
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "", 8080)])
    assert holds.open == [(6, 4, "", 8080), (6, 6, "", 8080)]
    publisher.publish(EID, "10.201.0.6", "fd10:201::6", [Request(6, 80, "", 8080)])
    assert len(holds.open) == 2  # a repeated publish replaces its reservations
    publisher.revoke(EID)
    assert holds.open == []


def test_a_restarted_plugin_takes_its_ports_again(publisher):
    from cilium_py.docker.ports import Binding

    publisher.hold_published(EID, [Binding(6, 80, "", 8080), Binding(17, 53, "::", 5353)],
                             "10.201.0.6", "fd10:201::6")
    assert holds.open == [(6, 4, "", 8080), (6, 6, "", 8080), (17, 6, "::", 5353)]


def test_a_held_port_cannot_be_bound_by_a_server():
    from cilium_py.docker.ports import hold_port

    held = hold_port(6, 4, "127.0.0.1", 0)
    assert held is not None
    port = held.getsockname()[1]
    with held, socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as err:
            server.bind(("127.0.0.1", port))
        assert err.value.errno == errno.EADDRINUSE
