"""Decoding of trace / policy-verdict events and the gate word (bpf/lib/trace.h)."""

from __future__ import annotations

import ctypes
import socket

from plugin.cli.monitor import format_event
from plugin.datapath.trace_events import (
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    TraceEvent,
    decode,
    decode_raw,
    gate_bits,
)


def _event(kind: int, code: int) -> TraceEvent:
    ev = TraceEvent()
    ev.type, ev.code, ev.prog, ev.family = kind, code, 1, 4
    ev.ep_id, ev.ifindex, ev.src_identity, ev.dst_identity, ev.len = 7, 12, 300, 301, 60
    ev.eth_proto, ev.proto, ev.tcp_flags = 0x0800, 6, 0x02
    ev.sport, ev.dport = socket.htons(40000), socket.htons(80)
    ev.saddr[:4] = [10, 0, 0, 1]
    ev.daddr[:4] = [10, 0, 0, 2]
    return ev


def test_gate_bits_follow_the_wanted_types() -> None:
    assert gate_bits([]) == 0
    assert gate_bits(["drop", "l7", "agent"]) == 0
    assert gate_bits(["trace"]) == 1
    assert gate_bits(["policy-verdict", "drop"]) == 2
    assert gate_bits(["*"]) == 3  # a reader of every type


def test_trace_event_decoded_and_formatted() -> None:
    out = decode(_event(EVENT_TRACE, 2), cpu=0)
    assert out["type"] == "trace" and out["observation"] == "to-endpoint"
    assert out["program"] == "to-container" and out["tcp_flags"] == "SYN"
    assert (out["src"], out["sport"], out["dst"], out["dport"]) == (
        "10.0.0.1", 40000, "10.0.0.2", 80)
    line = format_event({**out, "time": 0})
    assert "-> to-endpoint (to-container) endpoint 7 identity 300 -> identity 301" in line
    assert "10.0.0.1:40000 -> 10.0.0.2:80 TCP [SYN]" in line


def test_policy_verdict_with_and_without_a_match() -> None:
    ev = _event(EVENT_POLICY_VERDICT, 1)
    ev.direction, ev.match_shape, ev.match_identity = 1, 0x01, 300
    ev.match_dport, ev.match_proto = socket.htons(80), 6
    out = decode(ev)
    assert out["verdict"] == "allowed" and out["direction"] == "ingress"
    assert out["match"] == {"shape": "identity+port+protocol", "identity": 300, "port": 80,
                            "protocol": "TCP"}
    assert "match identity=300 port=80/TCP" in format_event(out)
    ev = _event(EVENT_POLICY_VERDICT, 2)
    out = decode(ev)
    assert out["verdict"] == "denied" and out["match"] is None
    assert "policy-verdict denied egress" in format_event(out)
    assert "match none" in format_event(out)


def test_other_record_types_are_left_to_the_drop_decoder() -> None:
    ev = _event(1, 5)  # EVENT_DROP
    buf = ctypes.create_string_buffer(bytes(ev))
    assert decode_raw(buf, ctypes.sizeof(ev)) is None
    ev = _event(EVENT_TRACE, 1)
    buf = ctypes.create_string_buffer(bytes(ev))
    assert decode_raw(buf, ctypes.sizeof(ev))["observation"] == "to-stack"
    assert decode_raw(buf, 10) is None
