"""The node's address allocator: IPv4 and IPv6 pools persisted in the store.

Correctness rests on the store alone: an address is taken by creating its claim key
(create-if-absent), so two threads, two processes or two agents sharing the store can
never hand out the same address. Speed comes from an in-memory hint (see
``tracker.py``) so that an allocation costs one read and two conditional writes, never
a listing of every allocation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import Conflict, InvalidInput, PoolExhausted
from ..store import Store
from . import records
from .pool import FIRST_ENDPOINT_OFFSET, IPAddress, IPNetwork, Pool, parse_address
from .tracker import OffsetTracker

DEFAULT_IPV4_POOL = "10.200.0.0/16"
DEFAULT_IPV6_POOL = "fd10:200::/112"
DEFAULT_PREFIX = "cilium-py/ipam/"

# When the in-memory hint says "full" the allocator re-reads the store; if it is
# still full after this many rounds the pool is reported exhausted.
_MAX_RESYNCS = 3
# Attempts at fixing up the owner index when concurrent writers keep changing it.
_MAX_INDEX_ATTEMPTS = 5

_FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


@dataclass
class _Family:
    pool: Pool
    tracker: OffsetTracker


class IPAM:
    """Allocates endpoint addresses from the node's pools.

    ``ipv4_pool`` / ``ipv6_pool`` are prefixes in CIDR form; None turns that family
    off (IPv4-only and IPv6-only nodes). The first host address of each pool is the
    router (gateway) address and is never allocated. ``prefix`` is where the
    allocations live in the store: give every node its own when nodes share a store.

    An owner (normally the endpoint id) holds at most one address per family, which
    makes ``allocate`` idempotent: a runtime retrying a request gets the same address.
    """

    def __init__(
        self,
        store: Store,
        ipv4_pool: str | None = DEFAULT_IPV4_POOL,
        ipv6_pool: str | None = DEFAULT_IPV6_POOL,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if ipv4_pool is None and ipv6_pool is None:
            raise InvalidInput("at least one of the IPv4 and IPv6 pools must be configured")
        self.store = store
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._families: dict[int, _Family] = {}
        for family, text in ((4, ipv4_pool), (6, ipv6_pool)):
            if text is None:
                continue
            pool = Pool.parse(text, family)
            self._families[family] = _Family(
                pool, OffsetTracker(FIRST_ENDPOINT_OFFSET, pool.last_offset)
            )
        for family in self._families:
            self._repair_index(family)

    # ---- configuration -------------------------------------------------------------

    def enabled(self, family: int) -> bool:
        return family in self._families

    @property
    def families(self) -> tuple[int, ...]:
        """The enabled families, IPv4 first."""
        return tuple(sorted(self._families))

    def pool(self, family: int) -> IPNetwork | None:
        fam = self._families.get(family)
        return fam.pool.network if fam else None

    def router(self, family: int) -> IPAddress | None:
        """The gateway address endpoints of ``family`` use; None when it is off."""
        fam = self._families.get(family)
        return fam.pool.router if fam else None

    # ---- allocation ----------------------------------------------------------------

    def allocate(self, family: int, owner: str, requested: str | None = None) -> IPAddress:
        """Give ``owner`` an address of ``family`` and return it.

        With ``requested`` that exact address is claimed: InvalidInput when it is not
        an allocatable address of the pool, Conflict when another owner holds it or
        the owner already holds a different one. Without it the owner's current
        address is returned if it has one, otherwise the next free one; PoolExhausted
        when none is left.
        """
        fam = self._family(family)
        _check_owner(owner)
        if requested is not None:
            address = parse_address(requested)
            if address.version != family:
                raise InvalidInput(
                    f"requested address {address} is not an IPv{family} address",
                    {"address": str(requested)},
                )
            fam.pool.check_requested(address)
            return self._allocate_requested(fam, owner, address)

        current = self._owned_address(family, owner)
        if current is not None:
            return current
        address = self._claim_next(fam, owner)
        return self._index(fam, owner, address, requested=False)

    def _claim_next(self, fam: _Family, owner: str) -> IPAddress:
        resyncs = 0
        claim = records.encode_claim(owner)
        while True:
            offset = fam.tracker.take_next()
            if offset is None:
                if resyncs >= _MAX_RESYNCS:
                    break
                resyncs += 1
                self._resync(fam.pool.family)
                continue
            address = fam.pool.address(offset)
            if self.store.create(records.address_key(self.prefix, address), claim):
                return address
            # Another writer got it first; the tracker keeps it marked as used.
        raise PoolExhausted(
            f"the IPv{fam.pool.family} pool {fam.pool.network} is exhausted "
            f"({fam.pool.total} addresses in use)"
        )

    def _allocate_requested(self, fam: _Family, owner: str, address: IPAddress) -> IPAddress:
        key = records.address_key(self.prefix, address)
        holder = self.owner_of(address)
        if holder is not None and holder != owner:
            raise Conflict(
                f"address {address} is already in use by {holder}", {"address": str(address)}
            )
        if holder is None:
            current = self._owned_address(fam.pool.family, owner)
            if current is not None and current != address:
                raise Conflict(
                    f"{owner} already holds {current}; release it before requesting {address}",
                    {"address": str(address)},
                )
            if not self.store.create(key, records.encode_claim(owner)):
                holder = self.owner_of(address)
                if holder != owner:
                    raise Conflict(
                        f"address {address} is already in use by {holder}",
                        {"address": str(address)},
                    )
        fam.tracker.mark_used(fam.pool.offset(address))
        return self._index(fam, owner, address, requested=True)

    def _index(self, fam: _Family, owner: str, address: IPAddress, requested: bool) -> IPAddress:
        """Record ``address`` as the owner's; settle a concurrent allocation for the
        same owner (the first indexed address wins, the other claim is given back)."""
        key = records.owner_key(self.prefix, fam.pool.family, owner)
        value = records.encode_index(address)
        for _ in range(_MAX_INDEX_ATTEMPTS):
            if self.store.create(key, value):
                return address
            kv = self.store.get(key)
            if kv is None:
                continue
            other = ipaddress.ip_address(records.decode_index(kv.value))
            if other == address:
                return address
            if self.owner_of(other) == owner:
                self.release(address, owner)
                if requested:
                    raise Conflict(
                        f"{owner} already holds {other}; release it before requesting {address}",
                        {"address": str(address)},
                    )
                return other
            # A stale index entry (its address was released): take it over.
            if self.store.compare_and_swap(key, kv.mod_revision, value):
                return address
        return address  # the claim is what matters; the index is repaired at start

    def _owned_address(self, family: int, owner: str) -> IPAddress | None:
        kv = self.store.get(records.owner_key(self.prefix, family, owner))
        if kv is None:
            return None
        address = ipaddress.ip_address(records.decode_index(kv.value))
        return address if self.owner_of(address) == owner else None

    # ---- release -------------------------------------------------------------------

    def release(self, address: str | IPAddress, owner: str | None = None) -> bool:
        """Give ``address`` back to its pool. With ``owner``, only if that owner holds
        it (so a late delete cannot free an address already handed to someone else).
        True when an allocation was removed; releasing a free address is harmless.
        """
        addr = parse_address(address)
        key = records.address_key(self.prefix, addr)
        while True:
            kv = self.store.get(key)
            if kv is None:
                self._forget(addr)
                return False
            holder = records.decode_claim(kv.value)
            if owner is not None and holder != owner:
                return False
            if self.store.compare_and_swap(key, kv.mod_revision, None):
                break
        self._drop_index(addr.version, holder, addr)
        self._forget(addr)
        return True

    def release_owner(self, owner: str) -> list[IPAddress]:
        """Release every address ``owner`` holds, in any family; returns them.

        Found through the owner index (one read per family), so the cost does not
        grow with the number of allocations; start-up repairs the index after a crash.
        """
        released: list[IPAddress] = []
        for family in (4, 6):
            index_key = records.owner_key(self.prefix, family, owner)
            kv = self.store.get(index_key)
            if kv is None:
                continue
            address = ipaddress.ip_address(records.decode_index(kv.value))
            if self.release(address, owner):
                released.append(address)
            kv = self.store.get(index_key)
            if kv is not None:
                self.store.compare_and_swap(index_key, kv.mod_revision, None)
        return released

    def _drop_index(self, family: int, owner: str, address: IPAddress) -> None:
        key = records.owner_key(self.prefix, family, owner)
        kv = self.store.get(key)
        if kv is not None and records.decode_index(kv.value) == address.compressed:
            self.store.compare_and_swap(key, kv.mod_revision, None)

    def _forget(self, address: IPAddress) -> None:
        fam = self._families.get(address.version)
        if fam is not None and fam.pool.contains(address):
            fam.tracker.mark_free(fam.pool.offset(address))

    # ---- queries -------------------------------------------------------------------

    def owner_of(self, address: str | IPAddress) -> str | None:
        addr = parse_address(address)
        kv = self.store.get(records.address_key(self.prefix, addr))
        return records.decode_claim(kv.value) if kv else None

    def allocations(self) -> dict[str, str]:
        """Every allocated address (compressed text) mapped to its owner."""
        result: dict[str, str] = {}
        for family in (4, 6):
            base = records.address_prefix(self.prefix, family)
            for kv in self.store.list(base):
                result[kv.key[len(base) :]] = records.decode_claim(kv.value)
        return result

    def status(self) -> dict[str, dict[str, object]]:
        """Per family: ``{"enabled", "pool", "router", "used", "free", "total"}``
        (only ``{"enabled": False}`` for a family that is off). Read from the store,
        so it also counts what other processes allocated."""
        result: dict[str, dict[str, object]] = {}
        for family, name in _FAMILY_NAMES.items():
            fam = self._families.get(family)
            if fam is None:
                result[name] = {"enabled": False}
                continue
            used = self._resync(family)
            result[name] = {
                "enabled": True,
                "pool": str(fam.pool.network),
                "router": str(fam.pool.router),
                "used": used,
                "free": fam.pool.total - used,
                "total": fam.pool.total,
            }
        return result

    # ---- internals -----------------------------------------------------------------

    def _family(self, family: int) -> _Family:
        if family not in _FAMILY_NAMES:
            raise InvalidInput(f"unknown address family {family!r}: use 4 or 6")
        fam = self._families.get(family)
        if fam is None:
            raise InvalidInput(f"IPv{family} is disabled on this node (no IPv{family} pool)")
        return fam

    def _resync(self, family: int) -> int:
        """Rebuild the family's in-memory hint from the store; returns the count of
        allocations inside the pool."""
        fam = self._families[family]
        base = records.address_prefix(self.prefix, family)
        offsets = []
        for kv in self.store.list(base):
            address = ipaddress.ip_address(kv.key[len(base) :])
            if fam.pool.is_allocatable(address):
                offsets.append(fam.pool.offset(address))
        fam.tracker.reset(offsets)
        return len(offsets)

    def _repair_index(self, family: int) -> None:
        """Bring the owner index in line with the claims after a crash between the
        two writes of an allocation or a release, then load the hint."""
        claims: dict[str, list[IPAddress]] = {}
        base = records.address_prefix(self.prefix, family)
        for kv in self.store.list(base):
            address = ipaddress.ip_address(kv.key[len(base) :])
            claims.setdefault(records.decode_claim(kv.value), []).append(address)
        index_base = records.owner_prefix(self.prefix, family)
        indexed: set[str] = set()
        for kv in self.store.list(index_base):
            owner = records.owner_from_key(kv.key, index_base)
            address = ipaddress.ip_address(records.decode_index(kv.value))
            if address in claims.get(owner, []):
                indexed.add(owner)
            else:
                self.store.compare_and_swap(kv.key, kv.mod_revision, None)
        for owner, addresses in claims.items():
            if owner not in indexed:
                self.store.create(
                    records.owner_key(self.prefix, family, owner),
                    records.encode_index(min(addresses)),
                )
        self._resync(family)


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 256:
        raise InvalidInput("an allocation needs an owner: a non-empty string of up to 256 chars")
