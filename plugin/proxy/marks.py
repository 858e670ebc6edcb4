"""Packet marks and routing shared by the datapath and every proxy (bpf/lib/proxy.h).

The programs mark the packets of redirected flows so that the node's routing
delivers them locally (to the proxy's transparent socket) whatever their destination
address is; proxies mark their upstream sockets so that the programs recognise what
they send. Only the bits under :data:`MARK_MAGIC_MASK` are ours; the upper 16 bits of
a to-proxy mark carry the proxy port when a flow is hairpinned to the assigning
device.
"""

from __future__ import annotations

MARK_MAGIC_MASK = 0x0F00
#: A packet the node must deliver locally, to the proxy socket assigned to it.
MARK_TO_PROXY = 0x0200
#: Sent by a proxy on the upstream side after enforcing ingress rules.
MARK_FROM_PROXY_INGRESS = 0x0A00
#: Sent by a proxy on the upstream side after enforcing egress rules.
MARK_FROM_PROXY_EGRESS = 0x0B00

#: Routing table with ``local 0.0.0.0/0 dev lo`` (and ``::/0``) for marked packets.
PROXY_ROUTE_TABLE = 2004
#: Priority of the ``fwmark`` rule, before the main table (32766).
PROXY_RULE_PRIORITY = 9


def to_proxy_mark(proxy_port: int = 0) -> int:
    return MARK_TO_PROXY | (proxy_port << 16)
