"""One address pool: which addresses of a prefix may be handed to endpoints.

Addresses are handled as integer offsets from the network address so that the
allocator's bookkeeping (a set of used offsets and a cursor) stays small and cheap
whatever the family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The router address is the first host address; endpoints start after it.
ROUTER_OFFSET = 1
FIRST_ENDPOINT_OFFSET = 2


@dataclass(frozen=True)
class Pool:
    """The allocatable range of one prefix.

    For IPv4 the network and broadcast addresses are never handed out. IPv6 has no
    broadcast, but its first address is the subnet-router anycast address, so it is
    excluded as well. The router (gateway) address is the first host address.
    """

    network: IPNetwork

    @classmethod
    def parse(cls, text: str, family: int) -> Pool:
        """Parse a pool from configuration, refusing what cannot work."""
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise InvalidInput(f"invalid IPv{family} pool {text!r}: {exc}") from exc
        if network.version != family:
            raise InvalidInput(f"pool {text!r} is not an IPv{family} prefix")
        if (
            network.is_loopback
            or network.is_multicast
            or network.is_link_local
            or network.network_address.is_unspecified
        ):
            raise InvalidInput(
                f"pool {text!r} is a loopback, multicast, link-local or unspecified range"
            )
        pool = cls(network)
        if pool.last_offset < FIRST_ENDPOINT_OFFSET:
            raise InvalidInput(
                f"pool {text!r} is too small: it needs room for a router address and "
                "at least one endpoint"
            )
        return pool

    @property
    def family(self) -> int:
        return self.network.version

    @property
    def last_offset(self) -> int:
        """The highest offset an endpoint may get (IPv4 keeps its broadcast)."""
        size = self.network.num_addresses
        return size - 2 if self.family == 4 else size - 1

    @property
    def total(self) -> int:
        """How many addresses endpoints can get (router excluded)."""
        return max(0, self.last_offset - FIRST_ENDPOINT_OFFSET + 1)

    @property
    def router(self) -> IPAddress:
        return self.address(ROUTER_OFFSET)

    def address(self, offset: int) -> IPAddress:
        return self.network.network_address + offset

    def offset(self, address: IPAddress) -> int:
        return int(address) - int(self.network.network_address)

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.family and address in self.network

    def is_allocatable(self, address: IPAddress) -> bool:
        return (
            self.contains(address)
            and FIRST_ENDPOINT_OFFSET <= self.offset(address) <= self.last_offset
        )

    def check_requested(self, address: IPAddress) -> None:
        """Raise InvalidInput naming why ``address`` cannot be given to an endpoint."""
        if not self.contains(address):
            raise InvalidInput(
                f"requested address {address} is outside the IPv{self.family} pool {self.network}",
                {"address": str(address)},
            )
        offset = self.offset(address)
        if offset == 0:
            why = "the pool's network address"
        elif offset == ROUTER_OFFSET:
            why = "the router address"
        elif offset > self.last_offset:
            why = "the pool's broadcast address"
        else:
            return
        raise InvalidInput(
            f"requested address {address} is {why} and cannot be given to an endpoint",
            {"address": str(address)},
        )


def parse_address(value: str | IPAddress) -> IPAddress:
    """Parse an address given by a caller; InvalidInput when it is not one."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError as exc:
        raise InvalidInput(f"invalid IP address {value!r}", {"address": str(value)}) from exc
