"""Network-namespace helpers for kernel tests.

Everything a kernel test creates lives in namespaces it made itself, named
``cpyt-<random>``, and is removed by name when the test ends (pass or fail):
deleting a namespace takes its veths, routes and tc filters with it. Pins go
in a test-unique directory under /sys/fs/bpf, removed by ``remove_pins``.
Nothing here touches the machine's own interfaces, routes or netfilter rules.

Pieces:

* ``unique_name`` / ``create_netns`` / ``delete_netns`` / ``netns`` (context
  manager) / ``ip`` / ``ns_exec`` / ``sysctl`` / ``add_veth`` / ``bpf_root``:
  create, use and remove namespaces and pin directories by name.
* ``NetnsWorker`` / ``run_in_netns``: a forked child process that entered a
  namespace with setns(2) and runs the callables it is sent. Unlike
  ``ip netns exec`` it keeps the machine's /sys mounted (so /sys/fs/bpf pins
  work) and it keeps state between calls (a running datapath, a listening
  socket; see ``state()``). Send module-level functions: they are pickled by
  name. ``kill()`` SIGKILLs exactly that child, as an agent crash would.
* ``add_gateway`` / ``add_endpoint`` / ``build_node``: what the agent does for
  a node and its containers (router address, veth pair, /32 and /128
  addresses, gateway route and permanent neighbour, host routes), so that
  datapath and policy tests can build a node by hand.
* ``datapath_start`` / ``datapath_call`` / ``drop_events``: run a
  ``cilium_py.datapath.Datapath`` inside a worker in the node namespace.
* ``add_outside``: a namespace behind the node's uplink, for world and CIDR
  peers.
* Traffic, meant to run inside a worker (``ping``, ``udp_send``,
  ``udp_listen_*``, ``tcp_sink_*``, ``tcp_send``, ``tcp_stream_*``,
  ``send_raw_frame`` with ``ipv4_udp_frame``/``arp_frame``; ``serve_start``
  with ``tcp_ok``/``udp_ok``/``udp_refused`` for pass/deny checks) and
  counters (``read_snmp``, ``read_snmp6``); no ping/nc binaries needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import multiprocessing
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.waiting import poll

NETNS_DIR = "/var/run/netns"
BPFFS = "/sys/fs/bpf"


def unique_name(prefix: str = "cpyt") -> str:
    """``prefix-<8 hex>``: short enough for interface names (15 chars) too."""
    return f"{prefix}-{secrets.token_hex(4)}"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command, return stdout; raise with stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(netns: str, *args: str, check: bool = True) -> str:
    """``ip -n NETNS ARGS``."""
    return sh("ip", "-n", netns, *args, check=check)


def ns_exec(netns: str, *argv: str, check: bool = True, timeout: float = 30) -> str:
    """Run a program inside ``netns`` (``ip netns exec``)."""
    return sh("ip", "netns", "exec", netns, *argv, check=check, timeout=timeout)


def create_netns(name: str, *, dad: bool = False) -> str:
    """Create ``name`` with loopback up. Without ``dad``, IPv6 duplicate address
    detection is off for devices created later, so that link-local addresses
    are usable at once instead of after a second of DAD."""
    sh("ip", "netns", "add", name)
    ip(name, "link", "set", "lo", "up")
    if not dad:
        sysctl(name, "net.ipv6.conf.default.accept_dad", "0")
        sysctl(name, "net.ipv6.conf.all.accept_dad", "0")
    return name


def delete_netns(name: str) -> None:
    """Delete by name; quiet when it is already gone."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        sh("ip", "netns", "del", name, check=False)


class NamespaceSet:
    """The namespaces one fixture makes (loopback up), deleted by name at ``close``,
    pass or fail: for fixtures that make them one by one as they go."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def make(self, prefix: str = "cpyt") -> str:
        name = create_netns(unique_name(prefix), dad=True)
        self.names.append(name)
        return name

    def close(self) -> None:
        for name in self.names:
            delete_netns(name)
        self.names.clear()


@contextlib.contextmanager
def netns(prefix: str = "cpyt") -> Iterator[str]:
    name = create_netns(unique_name(prefix))
    try:
        yield name
    finally:
        delete_netns(name)


def sysctl(netns: str, key: str, value: str) -> None:
    ns_exec(netns, "sysctl", "-q", "-w", f"{key}={value}")


def link_mac(netns: str, ifname: str) -> str:
    out = ip(netns, "-o", "link", "show", "dev", ifname)
    fields = out.split()
    return fields[fields.index("link/ether") + 1]


def link_index(netns: str, ifname: str) -> int:
    out = ip(netns, "-o", "link", "show", "dev", ifname)
    return int(out.split(":", 1)[0])


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair with one end in each namespace, both up."""
    ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    ip(ns_a, "link", "set", name_a, "up")
    ip(ns_b, "link", "set", name_b, "up")


@contextlib.contextmanager
def bpf_root(prefix: str = "cpyt") -> Iterator[str]:
    """A test-unique pin directory under /sys/fs/bpf, removed with its pins."""
    path = os.path.join(BPFFS, unique_name(prefix))
    os.makedirs(path)
    try:
        yield path
    finally:
        remove_pins(path)


def remove_pins(path: str) -> None:
    if not os.path.isdir(path):
        return
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            remove_pins(full)
        else:
            os.unlink(full)
    os.rmdir(path)


# ---------------------------------------------------------------------------
# Workers: processes that live in a namespace
# ---------------------------------------------------------------------------


class RemoteError(RuntimeError):
    """The callable raised in the worker; the message carries its traceback."""


_STATE: dict[str, Any] = {}
_CLONE_NEWNET = 0x40000000


def state() -> dict[str, Any]:
    """Per-process scratch space for callables run by a worker (one per worker)."""
    return _STATE


def enter_netns(name: str) -> None:
    """setns(2) the calling (single-threaded) process into a named namespace."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _worker_main(netns_name: str, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        enter_netns(netns_name)
    except Exception:  # noqa: BLE001 - reported to the parent
        conn.send((False, traceback.format_exc()))
        return
    conn.send((True, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        func, args, kwargs = msg
        try:
            result = func(*args, **kwargs)
        except Exception:  # noqa: BLE001 - reported to the parent
            conn.send((False, traceback.format_exc()))
        else:
            conn.send((True, result))


class NetnsWorker:
    """A forked child inside ``netns`` that runs callables sent to it, in order.

    A plain fork (not ``multiprocessing.Process``) so that a worker may start
    workers of its own, e.g. to send traffic from another namespace while it
    holds a program attached.
    """

    def __init__(self, netns_name: str) -> None:
        self.netns = netns_name
        self._conn, child_conn = multiprocessing.Pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                self._conn.close()
                _worker_main(netns_name, child_conn)
            except BaseException:  # noqa: BLE001 - never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        child_conn.close()
        self._pid: int | None = pid
        ok, value = self._recv(15)
        if not ok:
            self.kill()
            raise RemoteError(value)

    @property
    def pid(self) -> int:
        assert self._pid is not None
        return self._pid

    def _reap(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the child to exit; True once it is gone."""
        if self._pid is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            done, _ = os.waitpid(self._pid, os.WNOHANG)
            if done:
                self._pid = None
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _recv(self, timeout: float) -> tuple[bool, Any]:
        if not self._conn.poll(timeout):
            raise TimeoutError(f"worker in {self.netns} did not answer in {timeout}s")
        return self._conn.recv()

    def call(self, func: Callable[..., Any], *args: Any, timeout: float = 30, **kwargs: Any) -> Any:
        self._conn.send((func, args, kwargs))
        ok, value = self._recv(timeout)
        if not ok:
            raise RemoteError(value)
        return value

    def kill(self) -> None:
        """SIGKILL this worker (only this pid), as an agent crash would."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap(10)
        self._conn.close()

    def close(self, timeout: float = 10) -> None:
        if self._pid is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            if not self._reap(timeout):
                self.kill()
                return
        self._conn.close()

    def __enter__(self) -> NetnsWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_netns(netns_name: str, func: Callable[..., Any], *args: Any, timeout: float = 30,
                 **kwargs: Any) -> Any:
    """Run one callable in ``netns`` in a short-lived worker and return its result."""
    with NetnsWorker(netns_name) as worker:
        return worker.call(func, *args, timeout=timeout, **kwargs)


# ---------------------------------------------------------------------------
# A node with endpoints, built the way the agent builds it
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointNs:
    """One "container": a namespace joined to the node by a veth."""

    netns: str
    ifname: str  # inside the endpoint namespace
    host_ifname: str  # in the node namespace
    host_ifindex: int
    host_mac: str
    mac: str
    ipv4: str | None
    ipv6: str | None
    endpoint_id: int = 0
    identity: int = 0

    def datapath_info(self) -> Any:
        """The ``EndpointDatapathInfo`` the agent would hand to the datapath."""
        from cilium_py.datapath import EndpointDatapathInfo

        return EndpointDatapathInfo(
            ifindex=self.host_ifindex, host_mac=self.host_mac, mac=self.mac,
            endpoint_id=self.endpoint_id, identity=self.identity,
            ipv4=self.ipv4, ipv6=self.ipv6,
        )


def add_gateway(node_ns: str, ifname: str, ipv4: str | None, ipv6: str | None) -> None:
    """The router address endpoints use, on a device in the node namespace.

    A veth pair with both ends in the node (``ifname`` and ``ifname`` + "p"),
    like the agent's cilium_host/cilium_net: dummy devices are a module that
    some kernels (this one) lack.
    """
    ip(node_ns, "link", "add", ifname, "type", "veth", "peer", "name", f"{ifname}p")
    ip(node_ns, "link", "set", f"{ifname}p", "up")
    ip(node_ns, "link", "set", ifname, "up")
    if ipv4:
        ip(node_ns, "addr", "add", f"{ipv4}/32", "dev", ifname)
    if ipv6:
        ip(node_ns, "addr", "add", f"{ipv6}/128", "dev", ifname, "nodad")
    sysctl(node_ns, "net.ipv4.ip_forward", "1")
    sysctl(node_ns, "net.ipv6.conf.all.forwarding", "1")


def add_endpoint(
    node_ns: str,
    ep_ns: str,
    host_ifname: str,
    *,
    ipv4: str | None,
    ipv6: str | None,
    gw4: str | None,
    gw6: str | None,
    ifname: str = "eth0",
    endpoint_id: int = 0,
    identity: int = 0,
) -> EndpointNs:
    """Connect ``ep_ns`` to ``node_ns`` like a container: veth, addresses, routes."""
    add_veth(node_ns, host_ifname, ep_ns, ifname)
    host_mac = link_mac(node_ns, host_ifname)
    if ipv4:
        assert gw4
        ip(ep_ns, "addr", "add", f"{ipv4}/32", "dev", ifname)
        ip(ep_ns, "route", "add", f"{gw4}/32", "dev", ifname, "scope", "link")
        ip(ep_ns, "route", "add", "default", "via", gw4, "dev", ifname)
        ip(ep_ns, "neigh", "replace", gw4, "lladdr", host_mac, "dev", ifname, "nud", "permanent")
        ip(node_ns, "route", "add", f"{ipv4}/32", "dev", host_ifname)
    if ipv6:
        assert gw6
        ip(ep_ns, "addr", "add", f"{ipv6}/128", "dev", ifname, "nodad")
        ip(ep_ns, "route", "add", f"{gw6}/128", "dev", ifname)
        ip(ep_ns, "route", "add", "default", "via", gw6, "dev", ifname)
        ip(ep_ns, "neigh", "replace", gw6, "lladdr", host_mac, "dev", ifname, "nud", "permanent")
        ip(node_ns, "route", "add", f"{ipv6}/128", "dev", host_ifname)
    return EndpointNs(
        netns=ep_ns,
        ifname=ifname,
        host_ifname=host_ifname,
        host_ifindex=link_index(node_ns, host_ifname),
        host_mac=host_mac,
        mac=link_mac(ep_ns, ifname),
        ipv4=ipv4,
        ipv6=ipv6,
        endpoint_id=endpoint_id,
        identity=identity,
    )


def add_outside(node_ns: str, outside_ns: str, *, uplink: str = "cpy_up",
                node4: str = "198.51.100.1", node6: str = "2001:db8:1::1",
                addresses: tuple[str, ...] = ("198.51.100.2", "2001:db8:1::2"),
                extra: tuple[str, ...] = ()) -> None:
    """Hosts "outside" the node: ``outside_ns`` on a veth from the node's ``uplink``.

    The node holds ``node4``/``node6`` on the uplink (/24 and /64 routes) and routes
    the ``extra`` addresses (other prefixes, e.g. 203.0.113.2, as /32 and /128) to the
    outside too; the outside namespace has ``addresses`` and ``extra`` and a default
    route back through the node. Forwarding is on in the node only.
    """
    add_veth(node_ns, uplink, outside_ns, "eth0")
    ip(node_ns, "addr", "add", f"{node4}/24", "dev", uplink)
    ip(node_ns, "addr", "add", f"{node6}/64", "dev", uplink, "nodad")
    for addr in addresses:
        plen = 64 if ":" in addr else 24
        ip(outside_ns, "addr", "add", f"{addr}/{plen}", "dev", "eth0", *(
            ("nodad",) if ":" in addr else ()))
    for addr in extra:
        v6 = ":" in addr
        ip(outside_ns, "addr", "add", f"{addr}/{128 if v6 else 32}", "dev", "eth0",
           *(("nodad",) if v6 else ()))
        ip(node_ns, "route", "add", f"{addr}/{128 if v6 else 32}", "via",
           addresses[1] if v6 else addresses[0], "dev", uplink)
    ip(outside_ns, "route", "add", "default", "via", node4, "dev", "eth0")
    ip(outside_ns, "-6", "route", "add", "default", "via", node6, "dev", "eth0")
    sysctl(node_ns, "net.ipv4.ip_forward", "1")
    sysctl(node_ns, "net.ipv6.conf.all.forwarding", "1")


# ---------------------------------------------------------------------------
# Traffic, to be run inside a namespace (through a worker)
# ---------------------------------------------------------------------------


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(dst: str, count: int = 3, timeout: float = 1.0, src: str | None = None) -> int:
    """Send ``count`` ICMP(v6) echo requests, return how many replies came back."""
    v6 = ipaddress.ip_address(dst).version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    req_type, rep_type = (128, 129) if v6 else (8, 0)
    ident = secrets.randbits(16)
    replies = 0
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        if src:
            sock.bind((src, 0))
        for seq in range(count):
            payload = struct.pack("!d", time.time()) + b"cilium-py"
            header = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
            csum = 0 if v6 else inet_checksum(header + payload)  # the kernel sums ICMPv6
            packet = struct.pack("!BBHHH", req_type, 0, csum, ident, seq) + payload
            sock.sendto(packet, (dst, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(2048)
                except TimeoutError:
                    break
                if not v6:
                    data = data[(data[0] & 0x0F) * 4:]
                if ipaddress.ip_address(addr[0]) != ipaddress.ip_address(dst) or len(data) < 8:
                    continue
                rtype, _, _, rid, rseq = struct.unpack("!BBHHH", data[:8])
                if rtype == rep_type and rid == ident and rseq == seq:
                    replies += 1
                    break
    return replies


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def serve_start(tcp_ports: tuple[int, ...] = (80, 8080), udp_ports: tuple[int, ...] = (53,)
                ) -> None:
    """Serve on every address, v4 and v6, in the background until the worker ends:
    TCP answers ``hi`` and closes, UDP echoes. Pairs with ``tcp_ok``/``udp_ok``."""
    def accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.sendall(b"hi")

    def echo(sock: socket.socket) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(65535)
                sock.sendto(data, peer)
            except OSError:
                return

    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind, ports, serve in ((socket.SOCK_STREAM, tcp_ports, accept),
                                   (socket.SOCK_DGRAM, udp_ports, echo)):
            for port in ports:
                sock = socket.socket(family, kind)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((any_addr, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(64)
                _STATE.setdefault("servers", []).append(sock)
                threading.Thread(target=serve, args=(sock,), daemon=True).start()


def tcp_ok(dst: str, port: int, timeout: float = 0.5, src: str | None = None) -> bool:
    """Connect and read the ``serve_start`` greeting: True when the connection works."""
    try:
        with socket.create_connection((dst, port), timeout=timeout,
                                      source_address=(src, 0) if src else None) as sock:
            sock.settimeout(timeout)
            return sock.recv(2) == b"hi"
    except OSError:
        return False


def udp_ok(dst: str, port: int = 53, timeout: float = 0.5, src: str | None = None) -> bool:
    """One datagram to a ``serve_start`` echo: True when it comes back."""
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as sock:
        if src:
            sock.bind((src, 0))
        sock.settimeout(timeout)
        sock.sendto(b"ping", (dst, port))
        try:
            return sock.recvfrom(16)[0] == b"ping"
        except OSError:
            return False


def udp_echo_ok(dst: str, port: int, size: int, timeout: float = 0.5,
                src: str | None = None) -> bool:
    """A ``size``-byte datagram to a ``serve_start`` echo: True when it comes back whole
    (above the MTU, both ways travel as fragments)."""
    payload = os.urandom(size)
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as sock:
        if src:
            sock.bind((src, 0))
        sock.settimeout(timeout)
        sock.sendto(payload, (dst, port))
        try:
            return sock.recvfrom(65535)[0] == payload
        except OSError:
            return False


# An IPv6 destination options header with nothing but padding (next header and
# length as the kernel fills them in; one PadN option of 4 bytes).
DSTOPTS_PADDING = bytes([0, 0, 1, 4, 0, 0, 0, 0])


def udp_refused(dst: str, port: int, timeout: float = 0.5, *, dstopts: bool = False) -> bool:
    """Send to a closed UDP port: True when the ICMP port unreachable came back
    (a connected socket reports it as ECONNREFUSED). ``dstopts``: the datagram (IPv6)
    carries a destination options header, which the error then quotes too."""
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((dst, port))
        if dstopts:
            sock.sendmsg([b"anyone?"], [(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS,
                                         DSTOPTS_PADDING)])
        else:
            sock.send(b"anyone?")
        try:
            sock.recv(16)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def udp_flow_start(dst: str, port: int = 53, timeout: float = 0.5) -> int:
    """A connected UDP socket that exchanged one datagram with a ``serve_start`` echo;
    returns its local port. ``udp_flow_check`` uses it again."""
    sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.connect((dst, port))
    sock.send(b"first")
    assert sock.recv(16) == b"first"
    _STATE[f"udp_flow:{dst}:{port}"] = sock
    return sock.getsockname()[1]


def udp_flow_check(dst: str, port: int = 53) -> str:
    """One more exchange on the ``udp_flow_start`` socket: ``ok``, or ``refused`` when
    an ICMP error reached the socket in between (the kernel reports it on the next
    call), or ``timeout``."""
    sock = _STATE.pop(f"udp_flow:{dst}:{port}")
    with sock:
        try:
            sock.send(b"again")
            return "ok" if sock.recv(16) == b"again" else "garbled"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"


def send_icmp_port_unreachable(dst: str, inner_src: str, inner_dst: str, sport: int,
                               dport: int) -> None:
    """An ICMP / ICMPv6 port unreachable to ``dst`` quoting a UDP datagram
    ``inner_src:sport -> inner_dst:dport`` (the outer source is this namespace's)."""
    if _family(dst) == socket.AF_INET6:
        s = socket.inet_pton(socket.AF_INET6, inner_src)
        d = socket.inet_pton(socket.AF_INET6, inner_dst)
        inner = struct.pack("!IHBB", 6 << 28, 16, socket.IPPROTO_UDP, 64) + s + d
        inner += struct.pack("!HHHH", sport, dport, 16, 0) + b"\0" * 8
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            # type 1 (unreachable), code 4 (port); the kernel fills the checksum
            sock.sendto(struct.pack("!BBHI", 1, 4, 0, 0) + inner, (dst, 0))
        return
    s, d = socket.inet_aton(inner_src), socket.inet_aton(inner_dst)
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, socket.IPPROTO_UDP, 0, s, d)
    inner = inner[:10] + struct.pack("!H", inet_checksum(inner)) + inner[12:]
    inner += struct.pack("!HHHH", sport, dport, 16, 0) + b"\0" * 8
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    icmp = icmp[:2] + struct.pack("!H", inet_checksum(icmp)) + icmp[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.sendto(icmp, (dst, 0))


def udp_send(dst: str, port: int, payload: bytes, src: str | None = None) -> None:
    family = socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if src:
            sock.bind((src, 0))
        sock.sendto(payload, (dst, port))


def send_raw_frame(ifname: str, frame: bytes, count: int = 1) -> None:
    """Put a hand-made Ethernet frame on ``ifname`` (for forged-MAC tests)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        for _ in range(count):
            sock.send(frame)


def ipv4_udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
                   payload: bytes) -> bytes:
    """An Ethernet + IPv4 + UDP frame with valid checksums."""
    udp_len = 8 + len(payload)
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    ucsum = inet_checksum(pseudo + udp) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, udp_len, ucsum) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64,
                      socket.IPPROTO_UDP, 0, s, d)
    iph = iph[:10] + struct.pack("!H", inet_checksum(iph)) + iph[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return eth + b"\x08\x00" + iph + udp


def ipv6_udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
                   payload: bytes, *, dest_options: int = 0) -> bytes:
    """An Ethernet + IPv6 + UDP frame with a valid checksum, after ``dest_options``
    destination options headers (padding only)."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!IxxxB", udp_len, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    ucsum = inet_checksum(pseudo + udp) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, udp_len, ucsum) + payload
    exts = b""
    for i in range(dest_options):
        nxt = 60 if i < dest_options - 1 else socket.IPPROTO_UDP
        exts += bytes([nxt]) + DSTOPTS_PADDING[1:]
    first = 60 if dest_options else socket.IPPROTO_UDP
    body = exts + udp
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), first, 64) + s + d
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return eth + b"\x86\xdd" + ip6 + body


def send_icmpv6(dst: str, icmp_type: int, body: bytes, hop_limit: int = 255) -> None:
    """One ICMPv6 message (code 0) from this namespace's stack; the kernel picks the
    source and fills the checksum. ND needs hop limit 255 to be taken as ND."""
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
        sock.sendto(struct.pack("!BBH", icmp_type, 0, 0) + body, (dst, 0))


def icmpv6_frame(src_mac: str, dst_mac: str, src: str, dst: str, icmp_type: int, body: bytes,
                 *, hop_limit: int = 255) -> bytes:
    """An Ethernet + IPv6 + ICMPv6 frame (code 0, valid checksum); ``body`` is what
    follows the checksum."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    msg = struct.pack("!BBH", icmp_type, 0, 0) + body
    pseudo = s + d + struct.pack("!IxxxB", len(msg), socket.IPPROTO_ICMPV6)
    msg = msg[:2] + struct.pack("!H", inet_checksum(pseudo + msg)) + msg[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(msg), socket.IPPROTO_ICMPV6, hop_limit) + s + d
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return eth + b"\x86\xdd" + ip6 + msg


def nd_lladdr_option(kind: int, mac: str) -> bytes:
    """A source (1) or target (2) link-layer address option."""
    return bytes([kind, 1]) + bytes.fromhex(mac.replace(":", ""))


def neighbour_advert(src_mac: str, dst_mac: str, src: str, dst: str, target: str,
                     lladdr: str | None) -> bytes:
    """A solicited+override Neighbour Advertisement for ``target`` (frame)."""
    body = struct.pack("!I", 0x60000000) + socket.inet_pton(socket.AF_INET6, target)
    if lladdr:
        body += nd_lladdr_option(2, lladdr)
    return icmpv6_frame(src_mac, dst_mac, src, dst, 136, body)


def neighbour_solicit(src_mac: str, dst_mac: str, src: str, dst: str, target: str,
                      lladdr: str | None) -> bytes:
    body = b"\0" * 4 + socket.inet_pton(socket.AF_INET6, target)
    if lladdr:
        body += nd_lladdr_option(1, lladdr)
    return icmpv6_frame(src_mac, dst_mac, src, dst, 135, body)


def router_advert(src_mac: str, dst_mac: str, src: str, prefix: str) -> bytes:
    """A Router Advertisement (to all nodes) announcing ``prefix``/64 for SLAAC."""
    body = struct.pack("!BBHII", 64, 0, 1800, 0, 0)  # hop limit, flags, lifetime, timers
    body += nd_lladdr_option(1, src_mac)
    body += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
    body += socket.inet_pton(socket.AF_INET6, prefix)
    return icmpv6_frame(src_mac, dst_mac, src, "ff02::1", 134, body)


def redirect(src_mac: str, dst_mac: str, src: str, dst: str, target: str,
             destination: str) -> bytes:
    body = b"\0" * 4 + socket.inet_pton(socket.AF_INET6, target) + socket.inet_pton(
        socket.AF_INET6, destination)
    return icmpv6_frame(src_mac, dst_mac, src, dst, 137, body)


def arp_frame(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str,
              *, op: int = 2, dst_mac: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    """An Ethernet ARP frame (op 1 request, 2 reply) with free-form sender fields."""
    def mac(m: str) -> bytes:
        return bytes.fromhex(m.replace(":", ""))

    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac(sender_mac) + socket.inet_aton(
        sender_ip) + mac(dst_mac if op == 2 else "00:00:00:00:00:00") + socket.inet_aton(target_ip)
    return mac(dst_mac) + mac(src_mac) + b"\x08\x06" + body


# TCP: a sink that hashes what it receives, and a sender that streams to it.


def tcp_sink_start(bind: str, port: int) -> None:
    """Listen on ``bind``:``port`` in the background; one connection, bytes counted."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((bind, port))
    lsock.listen(1)
    result: dict[str, Any] = {"bytes": 0, "data": bytearray(), "done": False, "error": None}

    def serve() -> None:
        try:
            lsock.settimeout(30)
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(30)
                while chunk := conn.recv(65536):
                    result["data"] += chunk
                    result["bytes"] += len(chunk)
                conn.sendall(b"OK %d" % result["bytes"])
        except Exception as exc:  # noqa: BLE001 - reported through tcp_sink_result
            result["error"] = repr(exc)
        finally:
            lsock.close()
            result["done"] = True

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    _STATE[f"tcp_sink:{port}"] = (thread, result)


def tcp_sink_result(port: int, timeout: float = 20) -> dict[str, Any]:
    thread, result = _STATE.pop(f"tcp_sink:{port}")
    thread.join(timeout)
    return {"bytes": result["bytes"], "data": bytes(result["data"]), "done": result["done"],
            "error": result["error"]}


def tcp_send(dst: str, port: int, payload: bytes, timeout: float = 20) -> bytes:
    """Connect, send ``payload``, half-close, return the sink's acknowledgement."""
    with socket.create_connection((dst, port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        ack = b""
        while chunk := sock.recv(4096):
            ack += chunk
    return ack


def tcp_stream_start(dst: str, port: int, chunk: bytes, interval: float,
                     max_seconds: float = 30) -> None:
    """Open a connection and keep sending ``chunk`` every ``interval`` in the background
    until ``tcp_stream_stop``; the sender's view is returned by that call."""
    sock = socket.create_connection((dst, port), timeout=10)
    stop = threading.Event()
    info: dict[str, Any] = {"sent": 0, "error": None, "ack": b""}

    def run() -> None:
        deadline = time.monotonic() + max_seconds
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                sock.sendall(chunk)
                info["sent"] += len(chunk)
                stop.wait(interval)
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(4096):
                info["ack"] += data
        except Exception as exc:  # noqa: BLE001 - reported through tcp_stream_stop
            info["error"] = repr(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _STATE[f"tcp_stream:{port}"] = (thread, stop, info)


def tcp_stream_stop(port: int, timeout: float = 20) -> dict[str, Any]:
    thread, stop, info = _STATE.pop(f"tcp_stream:{port}")
    stop.set()
    thread.join(timeout)
    return dict(info)


def read_snmp(kind: str = "Ip") -> dict[str, int]:
    """This namespace's /proc/net/snmp section (e.g. Ip: ForwDatagrams)."""
    with open("/proc/net/snmp", encoding="ascii") as fh:
        lines = [line.split() for line in fh if line.startswith(f"{kind}:")]
    header, values = lines[0][1:], lines[1][1:]
    return {k: int(v) for k, v in zip(header, values, strict=True)}


def read_snmp6() -> dict[str, int]:
    with open("/proc/net/snmp6", encoding="ascii") as fh:
        return {k: int(v) for k, v in (line.split() for line in fh if line.strip())}


@dataclass
class NodeTopology:
    """A node namespace with a gateway and endpoint namespaces (see ``build_node``)."""

    node: str
    gw4: str
    gw6: str
    endpoints: list[EndpointNs]
    namespaces: list[str]

    def cleanup(self) -> None:
        for name in reversed(self.namespaces):
            delete_netns(name)


def build_node(
    count: int = 2,
    *,
    gw4: str = "10.200.0.1",
    gw6: str = "fd10:200::1",
    ipv4_fmt: str = "10.200.{n}.1",
    ipv6_fmt: str = "fd10:200:{n}::1",
    host_prefix: str = "lxc",
) -> NodeTopology:
    """Node namespace + ``count`` endpoint namespaces, wired like the agent does.

    Endpoint ``n`` (1-based) gets ``ipv4_fmt``/``ipv6_fmt`` formatted with ``n``,
    endpoint id ``100 + n`` and identity ``1000 + n``;
    its host veth is ``<host_prefix><n>`` in the node. The gateway addresses sit
    on a device in the node; forwarding is on in the node namespace only.
    Call ``cleanup()`` (it deletes every namespace by name), also on failure.
    """
    topo = NodeTopology(node="", gw4=gw4, gw6=gw6, endpoints=[], namespaces=[])
    try:
        topo.node = create_netns(unique_name())
        topo.namespaces.append(topo.node)
        add_gateway(topo.node, "cpy_gw", gw4, gw6)
        for n in range(1, count + 1):
            ep_ns = create_netns(unique_name())
            topo.namespaces.append(ep_ns)
            topo.endpoints.append(
                add_endpoint(topo.node, ep_ns, f"{host_prefix}{n}",
                             ipv4=ipv4_fmt.format(n=n), ipv6=ipv6_fmt.format(n=n),
                             gw4=gw4, gw6=gw6, endpoint_id=100 + n, identity=1000 + n)
            )
    except BaseException:
        topo.cleanup()
        raise
    return topo


# ---------------------------------------------------------------------------
# A datapath inside a worker (run these through NetnsWorker.call)
# ---------------------------------------------------------------------------


def datapath_start(bpf_root: str, endpoints: list[EndpointNs], *, attach: bool = True,
                   **options: Any) -> dict[str, Any]:
    """Start a ``Datapath`` in this worker (compile once), collect its drop events,
    and attach ``endpoints`` unless ``attach`` is False."""
    from cilium_py.datapath import Datapath

    dp = Datapath(bpf_root, **options)
    dp.start()
    events: list[dict[str, Any]] = []
    dp.subscribe_drops(events.append)
    _STATE["datapath"] = dp
    _STATE["drop_events"] = events
    if attach:
        for ep in endpoints:
            dp.attach_endpoint(ep.datapath_info())
    return {"prog_ids": dp.prog_ids, "compile_seconds": dp.compile_seconds}


def datapath_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """``getattr(datapath, method)(*args, **kwargs)`` on this worker's datapath."""
    return getattr(_STATE["datapath"], method)(*args, **kwargs)


def drop_events() -> list[dict[str, Any]]:
    return list(_STATE.get("drop_events", []))


def find_drop_event(worker: NetnsWorker, timeout: float = 3.0,
                    **match: Any) -> dict[str, Any] | None:
    """The first drop event seen by the datapath in ``worker`` whose fields match."""

    def look() -> dict[str, Any] | None:
        for ev in worker.call(drop_events):
            if all(ev.get(k) == v for k, v in match.items()):
                return ev
        return None

    return poll(look, timeout)


def drop_events_clear() -> None:
    """Forget the drop events seen so far (a test's own events are then easy to tell)."""
    _STATE.get("drop_events", []).clear()


def udp_listen_start(bind: str, port: int) -> None:
    """Bind a UDP socket; ``udp_listen_result`` returns what arrived on it."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    _STATE[f"udp:{port}"] = sock


_IP_RECVTTL = 12  # linux/in.h; the socket module does not export it


def udp_ttl_listen_start(bind: str, port: int) -> None:
    """Like ``udp_listen_start``, reporting each datagram's TTL / hop limit."""
    udp_listen_start(bind, port)
    sock = _STATE[f"udp:{port}"]
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)


def udp_ttl_listen_result(port: int, wait: float = 0.5) -> list[tuple[bytes, int]]:
    sock = _STATE.pop(f"udp:{port}")
    got: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + wait
    with sock:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(4))
            except TimeoutError:
                break
            ttl = next(struct.unpack("i", d[:4])[0] for _, _, d in ancillary)
            got.append((data, ttl))
    return got


def udp_listen_result(port: int, wait: float = 0.5) -> list[tuple[bytes, str]]:
    sock = _STATE.pop(f"udp:{port}")
    got: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + wait
    with sock:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                break
            got.append((data, addr[0]))
    return got
