"""Conntrack entries as JSON-ready rows (``cilium-py bpf ct list``)."""

from __future__ import annotations

from typing import Any

from .maps import (
    AF_INET,
    CT_EGRESS,
    CT_F_FROM_PROXY,
    CT_F_LOCAL,
    CT_F_PROXY_REDIRECT,
    CT_F_RESET,
    CT_F_RX_CLOSING,
    CT_F_SEEN_REPLY,
    CT_F_TX_CLOSING,
    CtKey4,
    CtKey6,
    addr_str,
    ntohs,
)

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
_CT_FLAG_NAMES = (
    (CT_F_TX_CLOSING, "tx-closing"),
    (CT_F_RX_CLOSING, "rx-closing"),
    (CT_F_SEEN_REPLY, "seen-reply"),
    (CT_F_RESET, "reset"),
    (CT_F_LOCAL, "local"),
    (CT_F_PROXY_REDIRECT, "to-proxy"),
    (CT_F_FROM_PROXY, "from-proxy"),
)


def tcp_state(flags: int) -> str:
    """The TCP state conntrack keeps (bpf/lib/conntrack.h), as far as lifetimes need it:
    syn-sent (no answer yet: CT_LIFETIME_SYN), established (CT_LIFETIME_TCP), closing
    (a FIN one way; still the established lifetime), closed (a FIN each way or a RST:
    CT_LIFETIME_CLOSE)."""
    both = CT_F_TX_CLOSING | CT_F_RX_CLOSING
    if flags & CT_F_RESET or flags & both == both:
        return "closed"
    if flags & both:
        return "closing"
    return "established" if flags & CT_F_SEEN_REPLY else "syn-sent"


def ct_row(key: CtKey4 | CtKey6, e: Any, family: int, now: int) -> dict[str, Any]:
    """One entry for ``bpf ct list``; ``state`` only for TCP, ``expired`` once past its
    lifetime (the agent's garbage collector removes it on its next run)."""
    flags = [label for bit, label in _CT_FLAG_NAMES if e.flags & bit]
    expires_in = int(e.expires) - now
    state = tcp_state(int(e.flags)) if key.nexthdr == 6 else None
    return {
        "family": "ipv4" if family == AF_INET else "ipv6",
        "protocol": _PROTO_NAMES.get(key.nexthdr, str(key.nexthdr)),
        "src": addr_str(key.saddr, family),
        "dst": addr_str(key.daddr, family),
        "sport": ntohs(key.sport),
        "dport": ntohs(key.dport),
        "direction": "egress" if key.flags == CT_EGRESS else "ingress",
        "state": "expired" if expires_in < 0 else state,
        "expires_in": expires_in,
        "tx_packets": int(e.tx_packets),
        "tx_bytes": int(e.tx_bytes),
        "rx_packets": int(e.rx_packets),
        "rx_bytes": int(e.rx_bytes),
        "flags": flags,
        "src_identity": int(e.src_identity),
    }
