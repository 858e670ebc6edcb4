"""Drop events from the ``cpy_events`` perf buffer, decoded into plain dicts.

Why a background thread: perf buffers must be drained continuously or the
kernel discards events ("lost"); the agent's API threads must never block on
that. The reader polls with a short timeout so ``stop()`` returns promptly.

The programs send at most ``DROP_EVENTS_PER_SEC`` drop events a second per
interface (bpf/lib/drop.h) and count the rest in ``cpy_drop_notify``; the reader
looks at those counts once a second and hands a ``drops-suppressed`` notice
(interface, how many, the limit) to the same callbacks, so a reader of the
stream knows events are missing; the drop counters themselves stay exact.

Callbacks run on the reader thread, one call per event; they must be quick
(hand the dict to a queue) and must not raise (exceptions are logged and
swallowed so one bad subscriber cannot stop the stream).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import trace_events
from .lb import EVENT_LB_TRACE, LbTraceEvent
from .maps import (
    AF_INET,
    AF_INET6,
    FAMILY_NAMES,
    DropEvent,
    DropReason,
    addr_str,
    mac_str,
    ntohs,
)

log = logging.getLogger("cilium_py.datapath.events")

EVENTS_MAP = "cpy_events"
EVENT_DROP = 1
NOTIFY_MAP = "cpy_drop_notify"
DROP_EVENTS_PER_SEC = 100  # bpf/lib/drop.h
NOTICE_TYPE = "drops-suppressed"
SWEEP_SECONDS = 1.0
ETH_P_ARP = 0x0806

DropCallback = Callable[[dict[str, Any]], None]

DIRECTIONS = {0: "from-container", 1: "to-container"}


def decode_lb_trace(ev: LbTraceEvent) -> dict[str, Any]:
    """A connection given a backend (bpf/lib/lb.h): a ``trace`` event whose flow is the
    client's packet to the frontend, with ``frontend`` and ``backend`` named."""
    family = int(ev.family)
    fe, be = addr_str(ev.faddr, family), addr_str(ev.baddr, family)

    def hp(addr: str, port: int) -> str:
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    return {
        "type": "trace",
        "observation": "service",
        "ifindex": int(ev.ifindex),
        "family": FAMILY_NAMES.get(family, ""),
        "protocol": int(ev.proto),
        "src": addr_str(ev.saddr, family),
        "sport": ntohs(int(ev.sport)),
        "dst": fe,
        "dport": ntohs(int(ev.fport)),
        "service": int(ev.svc_id),
        "frontend": hp(fe, ntohs(int(ev.fport))),
        "backend": hp(be, ntohs(int(ev.bport))),
    }


def decode_drop(ev: DropEvent, cpu: int | None = None) -> dict[str, Any]:
    """A drop event as JSON-ready values (addresses as strings, ports in host order).

    ``endpoint_id``/``ifindex`` name the endpoint the verdict is about and
    ``direction`` which side of it: ``from-container`` (its egress) or
    ``to-container`` (its ingress). For a policy drop on direct delivery between
    two local endpoints that is the destination and ``to-container``, although the
    sender's program dropped the packet. ``src_identity``/``dst_identity`` are the
    sender's and the receiver's identities (0 where a drop came before they were
    resolved).
    """
    try:
        reason_name = DropReason(ev.reason).label
    except ValueError:
        reason_name = f"unknown-{ev.reason}"
    family = ev.family
    if family == 0 and ev.eth_proto == ETH_P_ARP:
        shown = AF_INET  # ARP sender/target IPv4 addresses
    else:
        shown = family
    return {
        "type": "drop",
        "reason": int(ev.reason),
        "reason_name": reason_name,
        "direction": DIRECTIONS.get(ev.dir, str(ev.dir)),
        "endpoint_id": int(ev.ep_id),
        "ifindex": int(ev.ifindex),
        "family": FAMILY_NAMES.get(family, ""),
        "eth_proto": int(ev.eth_proto),
        "src": addr_str(ev.saddr, shown) if shown in (AF_INET, AF_INET6) else "",
        "dst": addr_str(ev.daddr, shown) if shown in (AF_INET, AF_INET6) else "",
        "protocol": int(ev.proto),
        "sport": ntohs(ev.sport),
        "dport": ntohs(ev.dport),
        "src_identity": int(ev.src_identity),
        "dst_identity": int(ev.dst_identity),
        "length": int(ev.len),
        "src_mac": mac_str(ev.smac),
        "dst_mac": mac_str(ev.dmac),
        "cpu": cpu,
    }


def suppression_notice(ifindex: int, count: int, total: int) -> dict[str, Any]:
    """The stream's notice that ``count`` drop events of ``ifindex`` were not sent."""
    return {
        "type": NOTICE_TYPE,
        "ifindex": ifindex,
        "count": count,
        "total": total,
        "limit_per_second": DROP_EVENTS_PER_SEC,
    }


class SuppressionTracker:
    """Turns the programs' ever-growing suppressed counts into deltas to report.

    Why deltas of a counter only the kernel writes: the reader never resets it, so
    no increment is lost between reading and reporting. An entry that vanished and
    came back (LRU eviction) starts from 0 again.
    """

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}

    def update(self, counts: dict[int, int]) -> list[dict[str, Any]]:
        notices = []
        for ifindex, total in sorted(counts.items()):
            before = self._seen.get(ifindex, 0)
            delta = total - before if total >= before else total
            if delta > 0:
                notices.append(suppression_notice(ifindex, delta, total))
        self._seen = dict(counts)
        return notices


class DropEventReader:
    """Reads the perf event array of one compiled module and fans events out."""

    def __init__(self, bpf: Any, *, page_cnt: int = 64, poll_ms: int = 100) -> None:
        self._bpf = bpf
        self._page_cnt = page_cnt
        self._poll_ms = poll_ms
        self._callbacks: list[DropCallback] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = False
        self._suppressed = SuppressionTracker()
        self.lost = 0

    def subscribe(self, callback: DropCallback) -> None:
        with self._lock:
            self._callbacks.append(callback)
        self._ensure_open()

    def unsubscribe(self, callback: DropCallback) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _ensure_open(self) -> None:
        with self._lock:
            if self._opened:
                return
            self._bpf[EVENTS_MAP].open_perf_buffer(
                self._on_raw, page_cnt=self._page_cnt, lost_cb=self._on_lost
            )
            self._opened = True
            self._thread = threading.Thread(
                target=self._run, name="cpy-drop-events", daemon=True
            )
            self._thread.start()

    def _on_lost(self, count: int) -> None:
        self.lost += count
        log.warning("lost %d drop events (perf buffer full)", count)

    def _on_raw(self, cpu: int, data: Any, size: int) -> None:
        if size >= 1 and ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8))[0] == EVENT_LB_TRACE:
            if size >= ctypes.sizeof(LbTraceEvent):  # a connection given a backend (lb.h)
                self._deliver(decode_lb_trace(
                    ctypes.cast(data, ctypes.POINTER(LbTraceEvent)).contents))
            return
        traced = trace_events.decode_raw(data, size, cpu)  # trace, policy-verdict (trace.h)
        if traced is not None:
            self._deliver(traced)
            return
        if size < ctypes.sizeof(DropEvent):
            return
        raw = ctypes.cast(data, ctypes.POINTER(DropEvent)).contents
        if raw.type != EVENT_DROP:
            return
        self._deliver(decode_drop(raw, cpu))

    def _deliver(self, event: dict[str, Any]) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - one subscriber must not stop the stream
                log.exception("drop event callback failed")

    def _suppressed_counts(self) -> dict[int, int]:
        try:
            table = self._bpf[NOTIFY_MAP]
        except KeyError:  # a module built without the rate limit
            return {}
        return {int(k.value): int(v.suppressed) for k, v in table.items()}

    def sweep(self) -> None:
        """Report drop events suppressed since the last sweep (one notice each
        interface that had some)."""
        for notice in self._suppressed.update(self._suppressed_counts()):
            self._deliver(notice)

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stop.is_set():
            try:
                self._bpf.perf_buffer_poll(timeout=self._poll_ms)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    self.sweep()
            except Exception:  # noqa: BLE001 - keep reading; log once per failure
                log.exception("polling drop events failed")
                self._stop.wait(1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
