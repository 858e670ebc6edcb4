"""Address sets of identities, for proxies that match peers by address.

The datapath gives an address the identity of its longest matching ipcache prefix,
world when none matches. A set S of identities therefore covers the addresses whose
longest match has an identity in S; written with prefixes only, that is the union of
one clause per prefix P with identity in S:

    P minus every more specific prefix inside P whose identity is not in S

(a deeper prefix with an identity in S brings its own clause back). World is a
virtual ``0.0.0.0/0`` and ``::/0`` under everything. Stock Envoy has no identity
lookup of its own, so its RBAC principals and destination matches are built from
these clauses and rewritten whenever the ipcache changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from functools import lru_cache

from ..labels import IPNetwork, ReservedIdentity

WORLD = int(ReservedIdentity.WORLD)
_WORLD_PREFIXES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

Clause = tuple[IPNetwork, tuple[IPNetwork, ...]]


class AddressSets:
    """Clauses per identity set over one ipcache snapshot (memoised)."""

    def __init__(self, ipcache: Mapping[str, int]) -> None:
        prefixes: dict[IPNetwork, int] = {}
        for text, identity in ipcache.items():
            prefixes[ipaddress.ip_network(text, strict=False)] = int(identity)
        for world in _WORLD_PREFIXES:
            prefixes.setdefault(world, WORLD)
        self._prefixes = prefixes
        self._by_version: dict[int, list[IPNetwork]] = {4: [], 6: []}
        for net in sorted(prefixes, key=lambda n: (n.version, n.prefixlen)):
            self._by_version[net.version].append(net)
        self._memo = lru_cache(maxsize=4096)(self._clauses)

    def identity_of(self, address: str) -> int:
        ip = ipaddress.ip_address(address)
        best: IPNetwork | None = None
        for net in self._by_version[ip.version]:
            if ip in net and (best is None or net.prefixlen > best.prefixlen):
                best = net
        return self._prefixes[best] if best is not None else WORLD

    def addresses_of(self, identity: int) -> list[IPNetwork]:
        return sorted((n for n, i in self._prefixes.items() if i == identity and
                       n not in _WORLD_PREFIXES), key=lambda n: (n.version, n))

    def clauses(self, identities: Collection[int]) -> tuple[Clause, ...]:
        return self._memo(frozenset(int(i) for i in identities))

    def _clauses(self, wanted: frozenset[int]) -> tuple[Clause, ...]:
        out: list[Clause] = []
        for version in (4, 6):
            nets = self._by_version[version]
            for net in nets:
                if self._prefixes[net] not in wanted:
                    continue
                excepts = [q for q in nets if q.prefixlen > net.prefixlen and q.subnet_of(net)
                           and self._prefixes[q] not in wanted]
                # An except inside another except adds nothing.
                excepts = [q for q in excepts if not any(
                    o.prefixlen < q.prefixlen and q.subnet_of(o) for o in excepts)]
                out.append((net, tuple(excepts)))
        return tuple(out)
