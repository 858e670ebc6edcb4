"""Node-local IP address management: IPv4 and IPv6 pools persisted in the store.

Defaults: IPv4 ``10.200.0.0/16`` and IPv6 ``fd10:200::/112`` (65,536 addresses each
way); either family is turned off by passing None for its pool. The first host
address of each pool is the router (gateway) address and is reserved.
"""

from __future__ import annotations

from .allocator import DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL, DEFAULT_PREFIX, IPAM
from .pool import IPAddress, IPNetwork, Pool

__all__ = [
    "DEFAULT_IPV4_POOL",
    "DEFAULT_IPV6_POOL",
    "DEFAULT_PREFIX",
    "IPAM",
    "IPAddress",
    "IPNetwork",
    "Pool",
]
