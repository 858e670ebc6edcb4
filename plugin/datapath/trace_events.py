"""Trace and policy-verdict events (bpf/lib/trace.h), decoded into plain dicts, and
the gate that keeps the datapath from emitting them while nobody reads them.

They share the drops' perf buffer; ``events.DropEventReader`` dispatches on the first
byte and hands these types to ``decode``. ``gate_bits`` turns the event types the
monitor readers want (``EventHub.wanted``) into the ``cpy_trace_cfg`` flag word.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

from .maps import AF_INET, AF_INET6, FAMILY_NAMES, Addr16, addr_str, ntohs

EVENT_TRACE = 2
EVENT_POLICY_VERDICT = 3
TYPES = {EVENT_TRACE: "trace", EVENT_POLICY_VERDICT: "policy-verdict"}

TRACE_F_TRACE = 0x1
TRACE_F_POLICY_VERDICT = 0x2

GATE_MAP = "cpy_trace_cfg"

OBSERVATION = {1: "to-stack", 2: "to-endpoint", 3: "to-proxy", 4: "to-overlay"}
PROGRAMS = {0: "from-container", 1: "to-container", 2: "from-overlay"}
VERDICTS = {1: "allowed", 2: "denied", 3: "redirected"}
DIRECTIONS = {0: "egress", 1: "ingress"}
PROTOCOLS = {6: "TCP", 17: "UDP"}
TCP_FLAGS = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"),
             (0x20, "URG"))
SHAPES = {0x01: "identity+port+protocol", 0x02: "identity+port", 0x04: "identity",
          0x08: "port+protocol", 0x10: "port", 0x20: "any"}


class TraceEvent(ctypes.Structure):
    """struct trace_event (bpf/lib/trace.h)."""

    _fields_ = [
        ("type", ctypes.c_uint8),
        ("code", ctypes.c_uint8),
        ("prog", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("ep_id", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("eth_proto", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("saddr", Addr16),
        ("daddr", Addr16),
        ("match_identity", ctypes.c_uint32),
        ("match_dport", ctypes.c_uint16),
        ("match_proto", ctypes.c_uint8),
        ("match_shape", ctypes.c_uint8),
        ("proxy_port", ctypes.c_uint16),
        ("direction", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


if ctypes.sizeof(TraceEvent) != 76:  # pragma: no cover - a layout change must show at once
    raise ImportError("struct trace_event changed: update TraceEvent")


def gate_bits(wanted: Iterable[str]) -> int:
    """The cpy_trace_cfg word for these wanted event types ("*": every type)."""
    types = set(wanted)
    bits = 0
    if types & {"*", "trace"}:
        bits |= TRACE_F_TRACE
    if types & {"*", "policy-verdict"}:
        bits |= TRACE_F_POLICY_VERDICT
    return bits


def tcp_flags(value: int) -> str:
    return ",".join(name for bit, name in TCP_FLAGS if value & bit)


def _match(ev: TraceEvent) -> dict[str, Any] | None:
    """The policy entry that decided, in the rule language's terms (None: no entry)."""
    if not ev.match_shape:
        return None
    port = ntohs(ev.match_dport)
    proto = PROTOCOLS.get(ev.match_proto, "ANY" if not ev.match_proto else str(ev.match_proto))
    return {
        "shape": SHAPES.get(ev.match_shape, str(ev.match_shape)),
        "identity": int(ev.match_identity) or "any",
        "port": port or "any",
        "protocol": proto,
    }


def decode(ev: TraceEvent, cpu: int | None = None) -> dict[str, Any]:
    """A trace or policy-verdict event as JSON-ready values; same key names as drops."""
    family = ev.family
    ip = family in (AF_INET, AF_INET6)
    out: dict[str, Any] = {
        "type": TYPES.get(ev.type, f"unknown-{ev.type}"),
        "program": PROGRAMS.get(ev.prog, str(ev.prog)),
        "endpoint_id": int(ev.ep_id),
        "ifindex": int(ev.ifindex),
        "family": FAMILY_NAMES.get(family, ""),
        "eth_proto": int(ev.eth_proto),
        "src": addr_str(ev.saddr, family) if ip else "",
        "dst": addr_str(ev.daddr, family) if ip else "",
        "protocol": int(ev.proto),
        "sport": ntohs(ev.sport),
        "dport": ntohs(ev.dport),
        "tcp_flags": tcp_flags(ev.tcp_flags) if ev.proto == 6 else "",
        "src_identity": int(ev.src_identity),
        "dst_identity": int(ev.dst_identity),
        "length": int(ev.len),
        "cpu": cpu,
    }
    if ev.type == EVENT_TRACE:
        out["observation"] = OBSERVATION.get(ev.code, str(ev.code))
        out["direction"] = out["program"]
    else:
        out["verdict"] = VERDICTS.get(ev.code, str(ev.code))
        out["direction"] = DIRECTIONS.get(ev.direction, str(ev.direction))
        out["match"] = _match(ev)
        if ev.proxy_port:
            out["proxy_port"] = int(ev.proxy_port)
    return out


def decode_raw(data: Any, size: int, cpu: int | None = None) -> dict[str, Any] | None:
    """Decode a raw perf record of these types (None for other types, e.g. drops)."""
    if size < ctypes.sizeof(TraceEvent):
        return None
    if ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8))[0] not in TYPES:
        return None
    return decode(ctypes.cast(data, ctypes.POINTER(TraceEvent)).contents, cpu)
