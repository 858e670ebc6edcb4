"""One probe: an ICMP echo or a TCP connect, timed. Blocking, for a prober thread.

A TCP probe counts a refused connection as reachable: the peer's stack answered, which
is what connectivity means; only silence (a timeout) or an unreachable error fails.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time


class ProbeFailed(Exception):
    pass


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(address: str, timeout: float = 1.0) -> float:
    """Seconds until the echo reply; ProbeFailed on timeout or error."""
    v6 = ipaddress.ip_address(address).version == 6
    family, proto = ((socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6
                     else (socket.AF_INET, socket.IPPROTO_ICMP))
    ident = (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF
    echo_type, reply_type = (128, 129) if v6 else (8, 0)
    payload = b"cilium-py-health"
    header = struct.pack("!BBHHH", echo_type, 0, 0, ident, 1)
    csum = 0 if v6 else _checksum(header + payload)  # the kernel fills ICMPv6's
    packet = struct.pack("!BBHHH", echo_type, 0, csum, ident, 1) + payload
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        start = time.monotonic()
        try:
            sock.sendto(packet, (address, 0))
        except OSError as exc:
            raise ProbeFailed(f"icmp send: {exc.strerror}") from exc
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise ProbeFailed("icmp: no reply")
            data, src = sock.recvfrom(2048)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
            if len(icmp) < 8 or src[0] != address:
                continue
            rtype, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
            if rtype == reply_type and rid == ident:
                return time.monotonic() - start


def tcp_connect(address: str, port: int, timeout: float = 1.0) -> float:
    """Seconds until the peer answered (connected or refused)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        start = time.monotonic()
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            return time.monotonic() - start
        except TimeoutError as exc:
            raise ProbeFailed("tcp: no answer") from exc
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                return time.monotonic() - start
            raise ProbeFailed(f"tcp: {exc.strerror}") from exc
        return time.monotonic() - start
