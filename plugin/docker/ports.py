"""Published ports (``docker run -p``) as iptables DNAT rules in our own chains.

dockerd leaves publishing to the network driver for remote drivers. The rules live in
chains whose names say who owns them, so they never mix with dockerd's or anybody
else's, and every rule carries a comment naming its Docker endpoint: revoking is "delete
every rule with this comment", which also works after the plugin restarted and lost its
memory. The rules are kernel state, so traffic keeps flowing while the plugin is down.

- ``nat CILIUM_PY_DOCKER_DNAT``, jumped to from PREROUTING and OUTPUT for traffic to a
  local address: ``HostIP:HostPort -> container:Port``.
- ``filter CILIUM_PY_DOCKER_FWD``, jumped to first from FORWARD: accept exactly the
  DNATed flows in both directions (dockerd's FORWARD policy is DROP). The container's
  ingress policy still applies in the datapath; the source is ``world``.

The chains belong to one plugin *instance*, named like its driver (the plugin socket's
name): the installed ``cilium-py`` keeps the names above, any other instance (a second
plugin on the same host, the tests) gets its own chains with a suffix and its own
comment tag (:class:`Chains`). An instance only ever lists, changes or removes its own
chains, so its start-up reconciliation cannot touch another instance's ports; only the
check for a host port that is already published looks at every instance's chains.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import Conflict, InvalidInput, Unavailable
from ..logs import get_logger
from .protocol import PROTO_NAMES

log = get_logger("docker.ports")

NAT_CHAIN = "CILIUM_PY_DOCKER_DNAT"
FWD_CHAIN = "CILIUM_PY_DOCKER_FWD"
INTERNAL_CHAIN = "CILIUM_PY_DOCKER_INT"
COMMENT_PREFIX = "cilium-py-docker:"
DEFAULT_INSTANCE = "cilium-py"
EPHEMERAL_FIRST, EPHEMERAL_LAST = 49153, 60999
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}


@dataclass(frozen=True)
class Chains:
    """The iptables names one plugin instance owns.

    ``instance`` is the driver name dockerd knows the plugin by. The default instance
    keeps the historical names, so an upgraded plugin finds the rules it wrote before;
    another instance's names carry six hex digits of a hash of its name (iptables
    allows 28 characters, driver names are longer).
    """

    instance: str = DEFAULT_INSTANCE

    @property
    def _suffix(self) -> str:
        if self.instance == DEFAULT_INSTANCE:
            return ""
        return "_" + hashlib.sha256(self.instance.encode()).hexdigest()[:6].upper()

    @property
    def nat(self) -> str:
        return NAT_CHAIN + self._suffix

    @property
    def fwd(self) -> str:
        return FWD_CHAIN + self._suffix

    @property
    def internal(self) -> str:
        """mangle chain of the endpoints of --internal networks (:mod:`.isolation`)."""
        return INTERNAL_CHAIN + self._suffix

    @property
    def comment_prefix(self) -> str:
        """What every rule's comment starts with, before the endpoint id."""
        if self.instance == DEFAULT_INSTANCE:
            return COMMENT_PREFIX
        return f"{COMMENT_PREFIX[:-1]}@{self.instance}:"

    def own(self) -> tuple[tuple[str, str], ...]:
        """(table, chain) of every chain of this instance."""
        return (("nat", self.nat), ("filter", self.fwd))

    def jumps(self, family: int) -> list[tuple[str, str, tuple[str, ...]]]:
        """(table, built-in chain, rule) of the jumps into this instance's chains: DNAT
        for traffic to the host's addresses (from outside and from the host itself,
        loopback aside) and the FORWARD accept chain."""
        local = ("-m", "addrtype", "--dst-type", "LOCAL")
        loopback = "127.0.0.0/8" if family == 4 else "::1/128"
        return [
            ("nat", "PREROUTING", (*local, "-j", self.nat)),
            ("nat", "OUTPUT", (*local, "!", "-d", loopback, "-j", self.nat)),
            ("filter", "FORWARD", ("-j", self.fwd)),
        ]


def instance_of(plugin_socket: str) -> str:
    """The driver name dockerd gives a plugin: its socket's file name without ``.sock``."""
    name = plugin_socket.rstrip("/").rsplit("/", 1)[-1]
    return name[:-5] if name.endswith(".sock") else name


@dataclass(frozen=True)
class Binding:
    """One published port, resolved: ``host_port`` is a concrete port."""

    proto: int
    port: int
    host_ip: str
    host_port: int

    def to_docker(self, container_ip: str = "") -> dict[str, Any]:
        """The PortBinding JSON dockerd expects back (EndpointOperInfo)."""
        return {"Proto": self.proto, "IP": container_ip, "Port": self.port,
                "HostIP": self.host_ip, "HostPort": self.host_port,
                "HostPortEnd": self.host_port}


@dataclass
class Request:
    """A binding as dockerd asks for it: ``host_port`` 0 means "any", a range means one of."""

    proto: int
    port: int
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0

    @classmethod
    def from_docker(cls, doc: Any) -> Request:
        if not isinstance(doc, dict):
            raise InvalidInput(f"port binding must be an object, not {doc!r}")
        try:
            req = cls(
                proto=int(doc.get("Proto", 6)),
                port=int(doc.get("Port", 0)),
                host_ip=str(doc.get("HostIP") or ""),
                host_port=int(doc.get("HostPort") or 0),
                host_port_end=int(doc.get("HostPortEnd") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed port binding {doc!r}: {exc}") from exc
        if req.proto not in PROTO_NAMES:
            raise InvalidInput(f"unsupported protocol number {req.proto} in port binding")
        if not 0 < req.port < 65536 or not 0 <= req.host_port < 65536:
            raise InvalidInput(f"port out of range in binding {doc!r}")
        if req.host_ip:
            try:
                req.host_ip = str(ipaddress.ip_address(req.host_ip))
            except ValueError as exc:
                raise InvalidInput(f"HostIP {req.host_ip!r} is not an address") from exc
        return req


class Publisher(Protocol):
    def publish(self, eid: str, ipv4: str | None, ipv6: str | None,
                requests: Sequence[Request]) -> list[Binding]: ...
    def revoke(self, eid: str) -> None: ...


Runner = Callable[[Sequence[str]], str]


def tagged_rules(saved: str, tag: str) -> list[list[str]]:
    """The rules of ``iptables -S CHAIN`` output whose comment is ``tag``, as the words
    after ``-A CHAIN`` (what ``-D CHAIN`` takes)."""
    out = []
    for line in saved.splitlines():
        words = line.split()
        if words[:1] == ["-A"] and tag in (w.strip('"') for w in words):
            out.append([w.strip('"') for w in words[2:]])
    return out


def tags_in(saved: str, prefix: str) -> set[str]:
    """What follows ``prefix`` in the rule comments of ``iptables -S`` output."""
    found = set()
    for word in saved.split():
        word = word.strip('"')
        if word.startswith(prefix):
            found.add(word[len(prefix):])
    return found


def run_command(argv: Sequence[str]) -> str:
    """Run iptables; a failure is Unavailable with iptables' own message."""
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"cannot run {argv[0]}: {exc}") from exc
    if res.returncode != 0:
        raise Unavailable(f"{' '.join(argv)} failed: {res.stderr.strip() or res.returncode}")
    return res.stdout


def _families(binding: Request, ipv4: str | None, ipv6: str | None) -> list[tuple[int, str]]:
    """(family, container address) pairs a binding is published for.

    ``0.0.0.0`` and ``::`` mean every address of their family, as with Docker's bridge.
    A loopback address is refused: the kernel routes ``127.0.0.0/8`` to a container
    only with ``route_localnet`` on its host interface, which would also let every
    container reach the host's loopback-only services (the class of CVE-2020-8558),
    and ``::1`` not at all.
    """
    if binding.host_ip:
        address = ipaddress.ip_address(binding.host_ip)
        if address.is_loopback:
            raise InvalidInput(
                f"cannot publish on the loopback address {address}: the kernel does not "
                "route loopback traffic to containers (not without opening the host's "
                "loopback services to them). Publish on all addresses (-p "
                f"{binding.host_port or 'PORT'}:{binding.port}) and allow only the host "
                'with a policy (fromEntities: ["host"]), or on another host address')
        target = ipv4 if address.version == 4 else ipv6
        if target is None:
            raise InvalidInput(
                f"cannot publish on {binding.host_ip}: the container has no "
                f"IPv{address.version} address on this network")
        return [(address.version, target)]
    return [(v, a) for v, a in ((4, ipv4), (6, ipv6)) if a is not None]


def _dest_match(host_ip: str) -> tuple[str, ...]:
    """The DNAT rule's destination match: none for all addresses of a family."""
    if not host_ip or ipaddress.ip_address(host_ip).is_unspecified:
        return ()
    return ("-d", host_ip)


def _probe(proto: int, family: int, host_ip: str, port: int) -> OSError | None:
    """Bind ``host_ip:port`` as a server would; the error when that fails.

    This is the check Docker's bridge gets from its port proxy, which fails to bind a
    port a host process listens on. TCP binds with SO_REUSEADDR, as servers (and
    Docker's proxy) do, so only a listening socket conflicts, not connections in
    TIME_WAIT; UDP without it, so any bound socket conflicts. Nothing stays bound.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    kind, number = {6: (socket.SOCK_STREAM, 0), 17: (socket.SOCK_DGRAM, 0),
                    132: (socket.SOCK_STREAM, socket.IPPROTO_SCTP)}[proto]
    try:
        sock = socket.socket(af, kind, number)
    except OSError:
        return None  # no such protocol here (sctp not loaded): nothing can listen on it
    with sock:
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if proto != 17:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host_ip or ("0.0.0.0" if family == 4 else "::"), port))
        except OSError as exc:
            return exc
    return None


def hold_port(proto: int, family: int, host_ip: str, port: int) -> socket.socket | None:
    """Keep ``host_ip:port`` bound, never listening, while it is published.

    Without SO_REUSEADDR a bound socket makes any later bind of the port fail, whatever
    the other socket's options, so a host process that starts afterwards is told the
    port is taken (as Docker's proxy tells it) instead of silently losing the traffic
    the DNAT rule takes. Not listening, it accepts nothing (TCP connections to it are
    reset; what the DNAT rules catch never reaches it). Best effort: None when the bind
    fails (a connection still in TIME_WAIT on the port, say); the rules work regardless.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    kind = socket.SOCK_DGRAM if proto == 17 else socket.SOCK_STREAM
    if proto not in (6, 17):
        return None
    sock = socket.socket(af, kind)
    try:
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host_ip or ("0.0.0.0" if family == 4 else "::"), port))
    except OSError:
        sock.close()
        return None
    return sock


Holder = Callable[[int, int, str, int], "socket.socket | None"]


def _refusal(proto: int, host_ip: str, port: int, exc: OSError) -> Exception:
    where = f"[{host_ip}]" if ":" in host_ip else (host_ip or "0.0.0.0")
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidInput(f"cannot publish on {host_ip}: it is not an address of this host")
    return Conflict(
        f"host port {port}/{PROTO_NAMES[proto]} is in use on this host (binding "
        f"{where}:{port} failed: {exc.strerror or exc}); a published port would take "
        "its traffic away from the process listening on it")


@dataclass
class IptablesPublisher:
    """:class:`Publisher` writing iptables/ip6tables rules; ``runner`` is swappable for tests."""

    runner: Runner = run_command
    chains: Chains = field(default_factory=Chains)
    hold: Holder = hold_port
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: set[int] = field(default_factory=set)
    _held: dict[str, list[socket.socket]] = field(default_factory=dict)

    def _tool(self, family: int) -> str:
        return "iptables" if family == 4 else "ip6tables"

    def _ipt(self, family: int, *args: str) -> str:
        return self.runner([self._tool(family), "-w", "5", *args])

    def _has(self, family: int, table: str, chain: str, *rule: str) -> bool:
        try:
            self._ipt(family, "-t", table, "-C", chain, *rule)
            return True
        except Unavailable:
            return False

    def _ensure_chains(self, family: int) -> None:
        if family in self._ready:
            return
        for table, chain in self.chains.own():
            try:
                self._ipt(family, "-t", table, "-N", chain)
            except Unavailable:
                pass  # exists already
        for table, parent, rule in self.chains.jumps(family):
            if not self._has(family, table, parent, *rule):
                self._ipt(family, "-t", table, "-I", parent, "1", *rule)
        self._ready.add(family)

    def _published_ports(self) -> set[tuple[int, int]]:
        """(proto, host port) pairs that the DNAT chains of *every* instance use, both
        families: two instances must not publish the same port either."""
        used: set[tuple[int, int]] = set()
        for family in (4, 6):
            try:
                text = self._ipt(family, "-t", "nat", "-S")
            except Unavailable:
                continue
            for line in text.splitlines():
                words = line.split()
                if words[:1] != ["-A"] or not words[1].startswith(NAT_CHAIN):
                    continue
                if "--dport" in words and "-p" in words:
                    proto = PROTO_NUMBERS.get(words[words.index("-p") + 1])
                    if proto is not None:
                        used.add((proto, int(words[words.index("--dport") + 1])))
        return used

    def _choose_port(self, req: Request, families: Sequence[int],
                     used: set[tuple[int, int]]) -> int:
        """The host port for ``req``: its own, or the first free one of its range (or of
        the ephemeral range). Free means no instance publishes it and a host process
        could bind it in every family it is published for."""
        name = PROTO_NAMES[req.proto]
        if req.host_port and req.host_port_end in (0, req.host_port):
            if (req.proto, req.host_port) in used:
                raise Conflict(f"host port {req.host_port}/{name} is already published")
            for family in families:
                failure = _probe(req.proto, family, req.host_ip, req.host_port)
                if failure is not None:
                    raise _refusal(req.proto, req.host_ip, req.host_port, failure)
            return req.host_port
        first, last = ((req.host_port, req.host_port_end) if req.host_port
                       else (EPHEMERAL_FIRST, EPHEMERAL_LAST))
        for port in range(first, last + 1):
            if (req.proto, port) in used:
                continue
            failures = [_probe(req.proto, f, req.host_ip, port) for f in families]
            bad = next((f for f in failures if f is not None), None)
            if bad is None:
                return port
            if bad.errno == errno.EADDRNOTAVAIL:
                raise _refusal(req.proto, req.host_ip, port, bad)
        raise Conflict(f"no free host port in {first}-{last}/{name}")

    def _rules(self, eid: str, family: int, container_ip: str, req: Request,
               host_port: int) -> list[tuple[str, ...]]:
        proto = PROTO_NAMES[req.proto]
        comment = ("-m", "comment", "--comment", self.chains.comment_prefix + eid)
        dest = f"{container_ip}:{req.port}" if family == 4 else f"[{container_ip}]:{req.port}"
        host = _dest_match(req.host_ip)
        return [
            ("-t", "nat", "-A", self.chains.nat, *host, "-p", proto, "--dport", str(host_port),
             *comment, "-j", "DNAT", "--to-destination", dest),
            ("-t", "filter", "-A", self.chains.fwd, "-d", container_ip, "-p", proto,
             "--dport", str(req.port), "-m", "conntrack", "--ctstate", "DNAT",
             *comment, "-j", "ACCEPT"),
            ("-t", "filter", "-A", self.chains.fwd, "-s", container_ip, "-p", proto,
             "--sport", str(req.port), "-m", "conntrack", "--ctstate", "DNAT",
             *comment, "-j", "ACCEPT"),
        ]

    def publish(self, eid: str, ipv4: str | None, ipv6: str | None,
                requests: Sequence[Request]) -> list[Binding]:
        if not requests:
            return []
        with self._lock:
            self._revoke_locked(eid)  # idempotent: a repeated call replaces, never doubles
            used = self._published_ports()
            bindings: list[Binding] = []
            try:
                for req in requests:
                    targets = _families(req, ipv4, ipv6)
                    host_port = self._choose_port(req, [f for f, _ in targets], used)
                    used.add((req.proto, host_port))
                    for family, container_ip in targets:
                        self._ensure_chains(family)
                        for rule in self._rules(eid, family, container_ip, req, host_port):
                            self._ipt(family, *rule)
                        self._hold_locked(eid, req.proto, family, req.host_ip, host_port)
                    bindings.append(Binding(req.proto, req.port, req.host_ip, host_port))
            except Exception:
                self._revoke_locked(eid)
                raise
        log.info("ports published", extra={"fields": {
            "endpoint": eid, "ports": [f"{b.host_port}->{b.port}" for b in bindings]}})
        return bindings

    def _hold_locked(self, eid: str, proto: int, family: int, host_ip: str, port: int) -> None:
        sock = self.hold(proto, family, host_ip, port)
        if sock is not None:
            self._held.setdefault(eid, []).append(sock)

    def hold_published(self, eid: str, bindings: Sequence[Binding], ipv4: str | None,
                       ipv6: str | None) -> None:
        """Take the host ports of an endpoint published before this process started
        (the reservation does not outlive the plugin; the rules do)."""
        with self._lock:
            for binding in bindings:
                if binding.host_ip:
                    families = [ipaddress.ip_address(binding.host_ip).version]
                else:
                    families = [f for f, a in ((4, ipv4), (6, ipv6)) if a is not None]
                for family in families:
                    self._hold_locked(eid, binding.proto, family, binding.host_ip,
                                      binding.host_port)

    def _release_holds(self, eid: str) -> None:
        for sock in self._held.pop(eid, []):
            sock.close()

    def _rules_of(self, family: int, table: str, chain: str, eid: str) -> list[list[str]]:
        try:
            text = self._ipt(family, "-t", table, "-S", chain)
        except Unavailable:
            return []
        return tagged_rules(text, self.chains.comment_prefix + eid)

    def _revoke_locked(self, eid: str) -> None:
        self._release_holds(eid)
        for family in (4, 6):
            for table, chain in self.chains.own():
                for rule in self._rules_of(family, table, chain, eid):
                    try:
                        self._ipt(family, "-t", table, "-D", chain, *rule)
                    except Unavailable as exc:
                        log.warning("could not remove a port rule",
                                    extra={"fields": {"endpoint": eid, "error": str(exc)}})

    def revoke(self, eid: str) -> None:
        with self._lock:
            self._revoke_locked(eid)

    def remove_chains(self) -> bool:
        """Remove our chains and the jumps to them, if no endpoint has rules left.

        For uninstalling and for tests; never done on shutdown, because published ports
        must keep working while the plugin restarts. Returns False (and removes
        nothing) while any endpoint still publishes a port.
        """
        with self._lock:
            if self.endpoints_with_rules():
                return False
            for family in (4, 6):
                for table, parent, rule in self.chains.jumps(family):
                    while self._has(family, table, parent, *rule):
                        self._ipt(family, "-t", table, "-D", parent, *rule)
                for table, chain in self.chains.own():
                    for op in ("-F", "-X"):
                        try:
                            self._ipt(family, "-t", table, op, chain)
                        except Unavailable:
                            pass  # never created
            self._ready.clear()
        return True

    def endpoints_with_rules(self) -> set[str]:
        """Endpoint ids that have rules (used to sweep rules of endpoints that are gone)."""
        found: set[str] = set()
        for family in (4, 6):
            try:
                text = self._ipt(family, "-t", "nat", "-S", self.chains.nat)
            except Unavailable:
                continue
            found |= tags_in(text, self.chains.comment_prefix)
        return found


def requests_from(options: dict[str, Any], key: str) -> list[Request]:
    raw: Iterable[Any] = options.get(key) or []
    if not isinstance(raw, list):
        raise InvalidInput(f"{key} must be a list")
    return [Request.from_docker(doc) for doc in raw]
