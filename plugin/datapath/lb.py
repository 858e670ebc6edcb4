"""The load-balancing maps (bpf/lib/lb.h): layouts, and the writer of services.

Why slots: the program picks a backend with one random number and one lookup,
whatever the number of backends, so a weight is expressed as that many slots
of the service's slot list (weights are reduced by their greatest common
divisor and scaled down to at most ``MAX_SLOTS``). A backend of weight 0 keeps
its existing connections and gets no new ones.

Why backend ids are per service and stable: session affinity remembers a
backend id, and an update that keeps a backend must keep its id so that
neither affinity nor the program's view of it changes. Ids are
``service id << 16 | n``; the writer reads the ids a service has from the
kernel, so an agent restart keeps them too.

Write order on update, so that no packet finds a slot without its backend:
new backends, then the slots, then the slot count (slot 0), then slots past
the new count, then backends that left. Connections already balanced keep
their backend (cpy_lb_conn holds its address): a removed backend's
connections are left to finish.
"""

from __future__ import annotations

import ctypes
import ipaddress
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import bpfsys
from .loader import DatapathError

Addr16 = ctypes.c_uint8 * 16

AF_INET = 4
AF_INET6 = 6
PROTOCOLS = {"TCP": 6, "UDP": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
LB_SVC_F_AFFINITY = 0x1
MAX_SLOTS = 4096
MAX_BACKENDS = 4096

LB_SVC = "cpy_lb_svc"
LB_BACKEND = "cpy_lb_backend"
LB_CONN = "cpy_lb_conn"
LB_REV = "cpy_lb_rev"
LB_AFFINITY = "cpy_lb_affinity"
LB_SOCK_FWD = "cpy_lb_sock_fwd"  # bpf/bpf_sock.c
LB_SOCK_REV = "cpy_lb_sock_rev"
LB_SOCK_CFG = "cpy_lb_sock_cfg"
LB_SVC_MAP_SIZE = 65536
LB_BACKEND_MAP_SIZE = 65536
LB_CONN_MAP_SIZE = 65536
LB_AFFINITY_MAP_SIZE = 16384
LB_SOCK_FWD_MAP_SIZE = 16384
LB_SOCK_REV_MAP_SIZE = 65536


class LbSvcKey(ctypes.Structure):
    _fields_ = [("addr", Addr16), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("slot", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class LbSvcValue(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32), ("svc_id", ctypes.c_uint32),
                ("flags", ctypes.c_uint16), ("pad", ctypes.c_uint16),
                ("affinity_timeout", ctypes.c_uint32)]


class LbBackend(ctypes.Structure):
    _fields_ = [("addr", Addr16), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("family", ctypes.c_uint8)]


class LbTuple(ctypes.Structure):
    _fields_ = [("saddr", Addr16), ("daddr", Addr16), ("sport", ctypes.c_uint16),
                ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("pad", ctypes.c_uint16)]


class LbNat(ctypes.Structure):
    _fields_ = [("addr", Addr16), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16),
                ("svc_id", ctypes.c_uint32), ("backend_id", ctypes.c_uint32),
                ("expires", ctypes.c_uint32)]


class LbAffinityKey(ctypes.Structure):
    _fields_ = [("client", Addr16), ("svc_id", ctypes.c_uint32), ("family", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3)]


class LbAffinityValue(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("last_used", ctypes.c_uint32)]


class LbSockKey(ctypes.Structure):
    """struct lb_sock_key (bpf/bpf_sock.c): a socket and a frontend or backend."""

    _fields_ = [("cookie", ctypes.c_uint64), ("addr", Addr16), ("port", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("family", ctypes.c_uint8), ("pad", ctypes.c_uint32)]


class LbSockCfg(ctypes.Structure):
    """struct lb_sock_cfg: the network namespace whose sockets are balanced."""

    _fields_ = [("netns_cookie", ctypes.c_uint64)]


EVENT_LB_TRACE = 20  # bpf/lib/lb.h


class LbTraceEvent(ctypes.Structure):
    """struct lb_trace_event: a connection given a backend."""

    _fields_ = [("type", ctypes.c_uint8), ("family", ctypes.c_uint8), ("proto", ctypes.c_uint8),
                ("pad", ctypes.c_uint8), ("ifindex", ctypes.c_uint32),
                ("svc_id", ctypes.c_uint32), ("sport", ctypes.c_uint16),
                ("fport", ctypes.c_uint16), ("bport", ctypes.c_uint16),
                ("pad2", ctypes.c_uint16), ("saddr", Addr16), ("faddr", Addr16),
                ("baddr", Addr16)]


for _struct, _size in ((LbTraceEvent, 68), (LbSvcKey, 24), (LbSvcValue, 16), (LbBackend, 20),
                       (LbTuple, 40), (LbNat, 32), (LbAffinityKey, 24), (LbAffinityValue, 8),
                       (LbSockKey, 32), (LbSockCfg, 8)):
    assert ctypes.sizeof(_struct) == _size, (_struct.__name__, ctypes.sizeof(_struct))


def lb_map_specs() -> list[Any]:
    """The pinned LB maps, for ``maps.map_specs``."""
    from .maps import MapSpec

    return [
        MapSpec(LB_SVC, bpfsys.BPF_MAP_TYPE_HASH, LbSvcKey, LbSvcValue, LB_SVC_MAP_SIZE),
        MapSpec(LB_BACKEND, bpfsys.BPF_MAP_TYPE_HASH, ctypes.c_uint32, LbBackend,
                LB_BACKEND_MAP_SIZE),
        MapSpec(LB_CONN, bpfsys.BPF_MAP_TYPE_LRU_HASH, LbTuple, LbNat, LB_CONN_MAP_SIZE),
        MapSpec(LB_REV, bpfsys.BPF_MAP_TYPE_LRU_HASH, LbTuple, LbNat, LB_CONN_MAP_SIZE),
        MapSpec(LB_AFFINITY, bpfsys.BPF_MAP_TYPE_LRU_HASH, LbAffinityKey, LbAffinityValue,
                LB_AFFINITY_MAP_SIZE),
        MapSpec(LB_SOCK_FWD, bpfsys.BPF_MAP_TYPE_LRU_HASH, LbSockKey, LbNat,
                LB_SOCK_FWD_MAP_SIZE),
        MapSpec(LB_SOCK_REV, bpfsys.BPF_MAP_TYPE_LRU_HASH, LbSockKey, LbNat,
                LB_SOCK_REV_MAP_SIZE),
        MapSpec(LB_SOCK_CFG, bpfsys.BPF_MAP_TYPE_ARRAY, ctypes.c_uint32, LbSockCfg, 1),
    ]


def _htons(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, "big"), "little")


def _family_packed(address: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(address)
    return (AF_INET if ip.version == 4 else AF_INET6), ip.packed


def _addr_str(raw: ctypes.Array, family: int) -> str:
    data = bytes(raw)
    return str(ipaddress.ip_address(data[:4] if family == AF_INET else data[:16]))


@dataclass(frozen=True)
class LbFrontend:
    address: str
    port: int
    protocol: str  # "TCP" | "UDP"

    def key(self, slot: int = 0) -> LbSvcKey:
        family, packed = _family_packed(self.address)
        key = LbSvcKey(port=_htons(self.port), proto=PROTOCOLS[self.protocol], family=family,
                       slot=slot)
        ctypes.memmove(key.addr, packed, len(packed))
        return key


@dataclass(frozen=True)
class LbBackendSpec:
    address: str
    port: int
    weight: int = 1


def slot_list(weights: Sequence[int], max_slots: int = MAX_SLOTS) -> list[int]:
    """Indexes into ``weights``, each repeated in proportion to its weight.

    Reduced by the weights' gcd; when the total is still over ``max_slots`` it is
    scaled down (every positive weight keeps at least one slot). Interleaved, so
    that a prefix of the list is already spread over the backends.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return []
    g = math.gcd(*positive)
    counts = [w // g for w in weights]
    total = sum(counts)
    if total > max_slots:
        counts = [max(1, c * max_slots // total) if c else 0 for c in counts]
    out: list[int] = []
    remaining = list(counts)
    while any(remaining):
        for i, left in enumerate(remaining):
            if left:
                out.append(i)
                remaining[i] -= 1
    return out[:max_slots]


def _full(exc: bpfsys.BpfError, name: str) -> DatapathError:
    return DatapathError(f"writing {name}: {exc}")


class LbTable:
    """Writes services into cpy_lb_svc / cpy_lb_backend; reads all five maps."""

    def __init__(self, svc: Any, backend: Any, conn: Any, rev: Any, affinity: Any) -> None:
        self.svc, self.backend, self.conn, self.rev, self.affinity = (
            svc, backend, conn, rev, affinity)
        # Backend ids by service, read from the kernel once (what a previous agent
        # wrote), then kept in step: an update must not walk every backend.
        self._by_svc: dict[int, dict[tuple[str, int], int]] = {}
        for key, value in backend.items():
            bid = int(key.value)
            self._by_svc.setdefault(bid >> 16, {})[
                (_addr_str(value.addr, value.family), _htons(int(value.port)))] = bid

    # -- writing ----------------------------------------------------------------

    def _service_backends(self, svc_id: int) -> dict[tuple[str, int], int]:
        """(address, port) -> backend id, of the backends the kernel holds for svc_id."""
        return dict(self._by_svc.get(svc_id, {}))

    def set_service(self, svc_id: int, frontend: LbFrontend,
                    backends: Sequence[LbBackendSpec], affinity_timeout: int = 0,
                    old_frontend: LbFrontend | None = None) -> dict[str, int]:
        """Make the kernel balance ``frontend`` over ``backends`` (see module doc)."""
        if not 0 < svc_id < 65536:
            raise DatapathError(f"service id {svc_id} out of range 1-65535")
        if len(backends) > MAX_BACKENDS:
            raise DatapathError(f"a service has at most {MAX_BACKENDS} backends")
        family, _ = _family_packed(frontend.address)
        proto = PROTOCOLS[frontend.protocol]
        existing = self._service_backends(svc_id)
        used = set(existing.values())
        ids: list[int] = []
        next_n = 1
        try:
            for b in backends:
                bid = existing.get((str(ipaddress.ip_address(b.address)), b.port))
                if bid is None:
                    while (svc_id << 16 | next_n) in used:
                        next_n += 1
                    bid = svc_id << 16 | next_n
                    used.add(bid)
                bfam, packed = _family_packed(b.address)
                if bfam != family:
                    raise DatapathError(f"backend {b.address} is not of the frontend's family")
                value = LbBackend(port=_htons(b.port), proto=proto, family=bfam)
                ctypes.memmove(value.addr, packed, len(packed))
                self.backend.update(ctypes.c_uint32(bid), value)
                ids.append(bid)
            slots = slot_list([b.weight for b in backends])
            for n, index in enumerate(slots, start=1):
                self.svc.update(frontend.key(n), LbSvcValue(count=ids[index], svc_id=svc_id))
            head = frontend.key(0)
            old_head = self.svc.lookup(head)
            old_count = int(old_head.count) if old_head is not None else 0
            self.svc.update(head, LbSvcValue(
                count=len(slots), svc_id=svc_id,
                flags=LB_SVC_F_AFFINITY if affinity_timeout > 0 else 0,
                affinity_timeout=affinity_timeout))
        except bpfsys.BpfError as exc:
            raise _full(exc, "the load-balancing maps") from exc
        for n in range(len(slots) + 1, old_count + 1):
            self.svc.delete(frontend.key(n))
        if old_frontend is not None and old_frontend != frontend:
            self._delete_frontend(old_frontend)
        keep = set(ids)
        removed = 0
        for bid in existing.values():
            if bid not in keep:
                removed += self.backend.delete(ctypes.c_uint32(bid))
        self._by_svc[svc_id] = {(str(ipaddress.ip_address(b.address)), b.port): bid
                                for b, bid in zip(backends, ids, strict=True)}
        return {"slots": len(slots), "backends": len(ids), "backends_removed": removed}

    def _delete_frontend(self, frontend: LbFrontend) -> None:
        head = self.svc.lookup(frontend.key(0))
        count = int(head.count) if head is not None else 0
        self.svc.delete(frontend.key(0))
        for n in range(1, count + 1):
            self.svc.delete(frontend.key(n))

    def delete_service(self, svc_id: int, frontend: LbFrontend) -> None:
        """Stop balancing ``frontend``: its slots, its backends, then its connections
        (a service created later on the same frontend starts afresh)."""
        self._delete_frontend(frontend)
        for bid in self._by_svc.pop(svc_id, {}).values():
            self.backend.delete(ctypes.c_uint32(bid))
        for m in (self.conn, self.rev):
            for key, nat in list(m.items()):
                if int(nat.svc_id) == svc_id:
                    m.delete(key)

    def service_ids(self) -> set[int]:
        return {int(v.svc_id) for k, v in self.svc.items() if k.slot == 0}

    def delete_unknown(self, keep: dict[int, LbFrontend]) -> int:
        """Remove every frontend that is not ``keep[its service id]`` (after a restore)."""
        wanted = {}
        for svc_id, fe in keep.items():
            head = fe.key(0)
            wanted[svc_id] = bytes(head)[:20]  # address, port, protocol, family
        removed = 0
        for key, value in list(self.svc.items()):
            if wanted.get(int(value.svc_id)) != bytes(key)[:20]:
                removed += self.svc.delete(key)
        for key in list(self.backend.keys()):
            if int(key.value) >> 16 not in keep:
                removed += self.backend.delete(key)
        for svc_id in set(self._by_svc) - set(keep):
            del self._by_svc[svc_id]
        return removed

    # -- reading ----------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per frontend: its slots resolved to backend addresses."""
        backends = {int(k.value): v for k, v in self.backend.items()}
        heads: dict[bytes, tuple[LbSvcKey, LbSvcValue]] = {}
        slots: dict[bytes, dict[int, int]] = {}
        for key, value in self.svc.items():
            base = LbSvcKey.from_buffer_copy(bytes(key))
            base.slot = 0
            if key.slot == 0:
                heads[bytes(base)] = (key, value)
            else:
                slots.setdefault(bytes(base), {})[int(key.slot)] = int(value.count)
        rows: list[dict[str, Any]] = []
        for packed, (key, head) in heads.items():
            per_backend: dict[int, int] = {}
            for n in range(1, int(head.count) + 1):
                bid = slots.get(packed, {}).get(n)
                if bid is not None:
                    per_backend[bid] = per_backend.get(bid, 0) + 1
            listed = []
            for bid, count in sorted(per_backend.items()):
                be = backends.get(bid)
                listed.append({
                    "id": bid,
                    "address": _addr_str(be.addr, be.family) if be else None,
                    "port": _htons(int(be.port)) if be else None,
                    "slots": count,
                })
            rows.append({
                "service": int(head.svc_id),
                "frontend": _fmt(_addr_str(key.addr, key.family), _htons(int(key.port))),
                "protocol": PROTOCOL_NAMES.get(int(key.proto), str(int(key.proto))),
                "slots": int(head.count),
                "affinity_timeout": int(head.affinity_timeout)
                if head.flags & LB_SVC_F_AFFINITY else 0,
                "backends": listed,
            })
        rows.sort(key=lambda r: int(r["service"]))
        return rows

    def connections(self) -> Iterator[dict[str, Any]]:
        for key, nat in self.conn.items():
            yield {
                "client": _fmt(_addr_str(key.saddr, key.family), _htons(int(key.sport))),
                "frontend": _fmt(_addr_str(key.daddr, key.family), _htons(int(key.dport))),
                "backend": _fmt(_addr_str(nat.addr, key.family), _htons(int(nat.port))),
                "protocol": PROTOCOL_NAMES.get(int(key.proto), str(int(key.proto))),
                "service": int(nat.svc_id),
                "expires": int(nat.expires),
            }


def _fmt(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
