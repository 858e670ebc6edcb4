"""ipcache keys: address prefixes as ``cpy_ipcache`` LPM trie keys, and back.

Pure (no kernel). The trie matches over ``{family, pad[3], addr[16]}``, so a
prefix's length in the key is ``IPCACHE_PREFIX_BASE`` (the family and padding,
always matched) plus the address prefix length; IPv4 and IPv6 prefixes never
cover each other. See ``bpf/lib/ipcache.h``.
"""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Mapping

from .maps import AF_INET, AF_INET6, IPCACHE_PREFIX_BASE, IpcacheKey

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefix(text: str) -> IPNetwork:
    """``10.0.0.5``, ``10.0.0.5/32``, ``198.51.100.0/24`` or ``fd10::/64``. Host
    bits are cleared (``10.1.2.3/24`` is ``10.1.2.0/24``)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"not an address or prefix: {text!r}") from exc


def ipcache_key(prefix: IPNetwork) -> IpcacheKey:
    key = IpcacheKey(prefixlen=IPCACHE_PREFIX_BASE + prefix.prefixlen,
                     family=AF_INET if prefix.version == 4 else AF_INET6)
    packed = prefix.network_address.packed
    ctypes.memmove(key.addr, packed, len(packed))
    return key


def prefix_of(key: IpcacheKey) -> IPNetwork:
    plen = int(key.prefixlen) - IPCACHE_PREFIX_BASE
    raw = bytes(key.addr)
    if key.family == AF_INET:
        return ipaddress.IPv4Network((raw[:4], plen))
    return ipaddress.IPv6Network((raw, plen))


def wanted_entries(mapping: Mapping[str, int]) -> dict[bytes, tuple[IPNetwork, int]]:
    """Packed key -> (prefix, identity) for a ``{prefix: identity}`` mapping.

    Two spellings of one prefix must agree on the identity, and identities are
    positive 32-bit numbers; anything else is a ValueError naming the entry.
    """
    out: dict[bytes, tuple[IPNetwork, int]] = {}
    for text, identity in mapping.items():
        prefix = parse_prefix(text)
        ident = int(identity)
        if not 0 < ident < 2**32:
            raise ValueError(f"ipcache {text}: identity out of range: {identity}")
        packed = bytes(ipcache_key(prefix))
        if packed in out and out[packed][1] != ident:
            raise ValueError(f"ipcache {prefix}: given twice with identities "
                             f"{out[packed][1]} and {ident}")
        out[packed] = (prefix, ident)
    return out
