"""The datapath's pinned maps: their C layouts in ctypes, and access to them.

Each ctypes structure mirrors a struct in ``bpf/lib/*.h`` byte for byte; the
sizes are asserted at import so that a layout change on one side only fails
loudly. ``MAP_SPECS`` lists every pinned map with the type and sizes the
programs expect: the loader compares it with what is already pinned before it
compiles, because bcc silently reuses a pin whatever its shape.

Addresses and ports are stored as the packet carries them (network byte
order; so is a policy key's port), other numbers in host order; helpers here
convert to and from Python values. ``cpy_policy`` and ``cpy_ipcache`` are only
written through ``tables.py``, which keeps the "one update per changed entry"
promise.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import bpfsys

# -- C layouts --------------------------------------------------------------

AF_INET = 4  # as carried in keys and events (CPY_AF_INET / CPY_AF_INET6)
AF_INET6 = 6
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}  # as the API and events spell them

EP_F_HAS_IPV4 = 0x1
EP_F_HAS_IPV6 = 0x2
EP_F_INGRESS_ENFORCED = 0x4
EP_F_EGRESS_ENFORCED = 0x8
EP_SHAPES_INGRESS_SHIFT = 8
EP_SHAPES_EGRESS_SHIFT = 16
#: the flags word bits set_policy owns (the rest belong to attach_endpoint)
EP_POLICY_FLAGS_MASK = (
    EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED
    | 0x3F << EP_SHAPES_INGRESS_SHIFT | 0x3F << EP_SHAPES_EGRESS_SHIFT
)

CT_EGRESS = 0
CT_INGRESS = 1

CT_F_TX_CLOSING = 0x1
CT_F_RX_CLOSING = 0x2
CT_F_SEEN_REPLY = 0x4
CT_F_RESET = 0x8
CT_F_LOCAL = 0x10
CT_F_PROXY_REDIRECT = 0x20
CT_F_FROM_PROXY = 0x40

POLICY_EGRESS = 0  # same numbering as the conntrack directions
POLICY_INGRESS = 1
POLICY_ACTION_ALLOW = 1
POLICY_ACTION_REDIRECT = 2

IPCACHE_PREFIX_BASE = 32  # family + pad bytes, always part of an ipcache prefix

Mac = ctypes.c_uint8 * 6
Addr16 = ctypes.c_uint8 * 16


class EndpointKey(ctypes.Structure):
    """struct endpoint_key: an endpoint IP (IPv4 in the first 4 bytes)."""

    _fields_ = [("addr", Addr16), ("family", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class EndpointInfo(ctypes.Structure):
    """struct endpoint_info: where a local endpoint IP is delivered."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("ep_id", ctypes.c_uint32),
        ("identity", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("mac", Mac),
        ("pad1", ctypes.c_uint8 * 2),
        ("node_mac", Mac),
        ("pad2", ctypes.c_uint8 * 2),
    ]


class EpConfig(ctypes.Structure):
    """struct ep_config: the endpoint behind a host veth, for source validation."""

    _fields_ = [
        ("ep_id", ctypes.c_uint32),
        ("identity", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ipv4", ctypes.c_uint8 * 4),
        ("ipv6", Addr16),
        ("ipv6_ll", Addr16),
        ("mac", Mac),
        ("node_mac", Mac),
        ("pad", ctypes.c_uint8 * 4),
    ]


class CtKey4(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint8 * 4),
        ("daddr", ctypes.c_uint8 * 4),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("nexthdr", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class CtKey6(ctypes.Structure):
    _fields_ = [
        ("saddr", Addr16),
        ("daddr", Addr16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("nexthdr", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("tx_packets", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("expires", ctypes.c_uint32),
        ("created", ctypes.c_uint32),
        ("flags", ctypes.c_uint16),
        ("tx_tcp_flags", ctypes.c_uint8),
        ("rx_tcp_flags", ctypes.c_uint8),
        ("src_identity", ctypes.c_uint32),
        ("proxy_port", ctypes.c_uint16),
        ("pad1", ctypes.c_uint16),
        ("pad2", ctypes.c_uint32),
    ]


class FragKey(ctypes.Structure):
    """struct frag_key (bpf/lib/ipfrag.h): a datagram's fragments."""

    _fields_ = [
        ("saddr", Addr16),
        ("daddr", Addr16),
        ("id", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class FragPorts(ctypes.Structure):
    """struct frag_ports: what the first fragment's transport header said."""

    _fields_ = [
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class IpcacheKey(ctypes.Structure):
    """struct ipcache_key: an LPM trie key over {family, pad, addr}."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("addr", Addr16),
    ]


class IpcacheValue(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class TunnelValue(ctypes.Structure):
    """struct tunnel_value: the node that holds an endpoint range."""

    _fields_ = [("node_addr", Addr16), ("family", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class NodeConfig(ctypes.Structure):
    """struct node_config (bpf/lib/overlay.h)."""

    _fields_ = [("tunnel_ifindex", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class PolicyKey(ctypes.Structure):
    """struct policy_key: dport in network byte order; 0 fields mean any."""

    _fields_ = [
        ("ep_id", ctypes.c_uint32),
        ("identity", ctypes.c_uint32),
        ("dport", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
    ]


class PolicyValue(ctypes.Structure):
    """struct policy_value: proxy_port in host byte order."""

    _fields_ = [
        ("proxy_port", ctypes.c_uint16),
        ("action", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class MetricValue(ctypes.Structure):
    """struct metric_value: one per CPU in cpy_metrics and cpy_drops."""

    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class DropEvent(ctypes.Structure):
    """struct drop_event, as read from the cpy_events perf buffer."""

    _fields_ = [
        ("type", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("ep_id", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("eth_proto", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("saddr", Addr16),
        ("daddr", Addr16),
        ("smac", Mac),
        ("dmac", Mac),
    ]


for _struct, _size in (
    (EndpointKey, 20), (EndpointInfo, 32), (EpConfig, 64), (CtKey4, 16), (CtKey6, 40),
    (CtEntry, 56), (MetricValue, 16), (DropEvent, 76), (IpcacheKey, 24), (IpcacheValue, 8),
    (PolicyKey, 12), (PolicyValue, 4), (TunnelValue, 20), (NodeConfig, 8), (FragKey, 40),
    (FragPorts, 8),
):
    assert ctypes.sizeof(_struct) == _size, (_struct.__name__, ctypes.sizeof(_struct))


class DropReason(enum.IntEnum):
    """Drop reason codes (bpf/lib/drop.h). Values are API: never renumber."""

    INVALID_SOURCE_MAC = 1
    INVALID_SOURCE_IP = 2
    UNSUPPORTED_L3 = 3
    CT_ERROR = 4
    POLICY_DENIED = 5
    UNKNOWN_ENDPOINT = 6
    INVALID_PACKET = 7
    WRITE_ERROR = 8
    FRAGMENT_NOT_FOUND = 9
    EXTENSION_HEADER_CHAIN_TOO_LONG = 10
    PROXY_UNAVAILABLE = 11
    PROXY_UNSUPPORTED = 12
    ICMP_ERROR_UNRELATED = 13
    FORBIDDEN_ICMPV6 = 14
    NO_SERVICE_BACKEND = 24  # bpf/lib/lb.h
    CT_MISSING_SYN = 15
    FAMILY_DISABLED = 16

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Metric(enum.IntEnum):
    """Forwarding counters (bpf/lib/metrics.h)."""

    FROM_ENDPOINT_TO_STACK = 0
    FROM_ENDPOINT_LOCAL_DELIVERY = 1
    TO_ENDPOINT_FROM_STACK = 2
    CT_CREATED = 3
    FROM_ENDPOINT_OVERLAY = 8
    FROM_OVERLAY_LOCAL_DELIVERY = 9

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


DROP_REASON_MAX = 32
METRIC_MAX = 16

# -- Map specifications -----------------------------------------------------


@dataclass(frozen=True)
class MapSpec:
    """What the compiled programs expect a pinned map to be."""

    name: str
    map_type: int
    key: type[ctypes.Structure] | type[ctypes.c_uint32]
    value: type[ctypes.Structure]
    max_entries: int
    flags: int = 0

    def matches(self, info: bpfsys.MapInfo) -> bool:
        return (
            info.type == self.map_type
            and info.key_size == ctypes.sizeof(self.key)
            and info.value_size == ctypes.sizeof(self.value)
            and info.max_entries == self.max_entries
            and info.flags == self.flags
        )


LXC = "cpy_lxc"
EP_CFG = "cpy_ep_cfg"
CT4 = "cpy_ct4"
CT6 = "cpy_ct6"
METRICS = "cpy_metrics"
DROPS = "cpy_drops"
IPCACHE = "cpy_ipcache"
POLICY = "cpy_policy"
TUNNEL = "cpy_tunnel"
NODE = "cpy_node"
FRAG = "cpy_frag"
TUNNEL_MAP_SIZE = 1024
FRAG_MAP_SIZE = 8192


def map_specs(
    ct_size: int, endpoint_size: int, ipcache_size: int = 16384, policy_size: int = 65536
) -> dict[str, MapSpec]:
    """Every pinned map for the given sizes, by name."""
    specs = [
        MapSpec(IPCACHE, bpfsys.BPF_MAP_TYPE_LPM_TRIE, IpcacheKey, IpcacheValue, ipcache_size,
                bpfsys.BPF_F_NO_PREALLOC),
        MapSpec(POLICY, bpfsys.BPF_MAP_TYPE_HASH, PolicyKey, PolicyValue, policy_size),
        MapSpec(LXC, bpfsys.BPF_MAP_TYPE_HASH, EndpointKey, EndpointInfo, endpoint_size),
        MapSpec(EP_CFG, bpfsys.BPF_MAP_TYPE_HASH, ctypes.c_uint32, EpConfig, endpoint_size),
        MapSpec(CT4, bpfsys.BPF_MAP_TYPE_LRU_HASH, CtKey4, CtEntry, ct_size),
        MapSpec(CT6, bpfsys.BPF_MAP_TYPE_LRU_HASH, CtKey6, CtEntry, ct_size),
        MapSpec(METRICS, bpfsys.BPF_MAP_TYPE_PERCPU_ARRAY, ctypes.c_uint32, MetricValue,
                METRIC_MAX),
        MapSpec(DROPS, bpfsys.BPF_MAP_TYPE_PERCPU_ARRAY, ctypes.c_uint32, MetricValue,
                2 * DROP_REASON_MAX),
        MapSpec(TUNNEL, bpfsys.BPF_MAP_TYPE_LPM_TRIE, IpcacheKey, TunnelValue, TUNNEL_MAP_SIZE,
                bpfsys.BPF_F_NO_PREALLOC),
        MapSpec(NODE, bpfsys.BPF_MAP_TYPE_ARRAY, ctypes.c_uint32, NodeConfig, 1),
        MapSpec(FRAG, bpfsys.BPF_MAP_TYPE_LRU_HASH, FragKey, FragPorts, FRAG_MAP_SIZE),
    ]
    from .lb import lb_map_specs  # the load-balancing maps (bpf/lib/lb.h)

    specs += lb_map_specs()
    return {s.name: s for s in specs}


# -- Access -------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class PinnedMap(Generic[K, V]):
    """A pinned map opened by path, with typed keys and values.

    Holds its own fd (independent of bcc's), so it stays usable for reading
    and writing whatever compiled the programs. Per-CPU maps return one value
    per possible CPU.
    """

    def __init__(self, path: str, key_type: type[K], value_type: type[V]) -> None:
        self.path = path
        self.key_type = key_type
        self.value_type = value_type
        self.fd = bpfsys.obj_get(path)
        self.info = bpfsys.map_info(self.fd)
        self.percpu = self.info.type in bpfsys.PERCPU_TYPES
        self._ncpus = bpfsys.possible_cpus() if self.percpu else 1
        if self.percpu and ctypes.sizeof(value_type) % 8:
            raise ValueError("per-CPU values must be 8-byte multiples")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buffer(self) -> ctypes.Array:
        return (self.value_type * self._ncpus)()

    def lookup(self, key: K) -> V | None:
        if self.percpu:
            raise TypeError("use lookup_percpu on a per-CPU map")
        value = self.value_type()
        return value if bpfsys.map_lookup(self.fd, key, value) else None

    def lookup_percpu(self, key: K) -> list[V] | None:
        values = self._value_buffer()
        if not bpfsys.map_lookup(self.fd, key, values):
            return None
        return list(values)

    def update(self, key: K, value: V, flags: int = bpfsys.BPF_ANY) -> None:
        bpfsys.map_update(self.fd, key, value, flags)

    def delete(self, key: K) -> bool:
        return bpfsys.map_delete(self.fd, key)

    def keys(self) -> Iterator[K]:
        """Snapshot of the keys (taken first, so deleting while iterating is safe)."""
        found: list[K] = []
        prev: K | None = None
        while True:
            nxt = self.key_type()
            if not bpfsys.map_next_key(self.fd, prev, nxt):
                break
            found.append(nxt)
            prev = nxt
            if len(found) > self.info.max_entries * 2:  # a key vanished mid-walk: restart
                break
        return iter(found)

    def items(self) -> Iterator[tuple[K, V]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __enter__(self) -> PinnedMap[K, V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Conversions --------------------------------------------------------------


def mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def mac_str(raw: ctypes.Array) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def addr_str(raw: ctypes.Array, family: int) -> str:
    data = bytes(raw)
    if family == AF_INET:
        return str(ipaddress.IPv4Address(data[:4]))
    return str(ipaddress.IPv6Address(data[:16]))


def ntohs(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, "little"), "big")


def htons(value: int) -> int:
    return ntohs(value)


def endpoint_key(address: str) -> EndpointKey:
    ip = ipaddress.ip_address(address)
    key = EndpointKey(family=AF_INET if ip.version == 4 else AF_INET6)
    ctypes.memmove(key.addr, ip.packed, len(ip.packed))
    return key


def link_local_from_mac(mac: str) -> str:
    """fe80::/64 with the modified EUI-64 interface id, the kernel's default."""
    raw = bytearray(mac_bytes(mac))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid))
