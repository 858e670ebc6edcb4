/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Redirecting connections into a local L7 proxy (plugin/proxy/, marks.py).
 *
 * A policy entry with action redirect names the proxy's port. The first
 * packet of such a connection, seen at tc ingress of the sender's host veth
 * (from_container), is assigned to the proxy's transparent listening socket
 * (bpf_sk_assign, in the node's namespace) and marked MARK_TO_PROXY; the
 * node's routing delivers marked packets locally (ip rule fwmark
 * MARK_TO_PROXY -> a table with "local 0.0.0.0/0 dev lo"), so the accepted
 * socket's getsockname() is the original destination. Its conntrack entry
 * carries CT_F_PROXY_REDIRECT, and every later packet of the flow is marked
 * and handed to the node stack, where TCP finds the accepted socket by its
 * tuple. Only TCP is redirected; anything else hitting a redirect entry is
 * dropped (DROP_PROXY_UNSUPPORTED), as is a connection for a proxy that does
 * not listen (DROP_PROXY_UNAVAILABLE): fail closed.
 *
 * The proxy connects upstream from the client's address with SO_MARK
 * MARK_FROM_PROXY_*. The destination's to_container recognises the mark
 * (only a privileged socket of the node can set it; marks do not cross
 * namespaces), takes the client's identity from the ipcache instead of
 * "host", does not redirect an ingress-proxied connection again, and flags
 * the entry CT_F_FROM_PROXY so that the replies, which leave the destination
 * towards the client's address, are marked and handed to the node stack (to
 * the proxy's socket) instead of being delivered to the client directly.
 */
#ifndef CPY_PROXY_H
#define CPY_PROXY_H

#include "lib/common.h"
#include "lib/drop.h"
#include "lib/l4.h"

#define MARK_MAGIC_MASK 0x0f00
#define MARK_TO_PROXY 0x0200
#define MARK_FROM_PROXY_INGRESS 0x0a00
#define MARK_FROM_PROXY_EGRESS 0x0b00

static __always_inline int proxy_mark_is(const struct __sk_buff *skb, __u32 magic)
{
	return (skb->mark & MARK_MAGIC_MASK) == magic;
}

static __always_inline int from_proxy(const struct __sk_buff *skb)
{
	return proxy_mark_is(skb, MARK_FROM_PROXY_INGRESS) ||
	       proxy_mark_is(skb, MARK_FROM_PROXY_EGRESS);
}

/* A packet of a redirected flow (or a reply to the proxy): to the node stack. */
static __always_inline int proxy_deliver(struct __sk_buff *skb)
{
	skb->mark = MARK_TO_PROXY;
	return TC_ACT_OK;
}

/*
 * Assign the first packet of a connection to the listener on @proxy_port.
 * Returns 0, or the drop reason.
 */
static __always_inline int proxy_assign(struct __sk_buff *skb, const struct pkt_info *pkt,
					__u16 proxy_port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 size;
	long ret;

	if (pkt->proto != IPPROTO_TCP || pkt->frag)
		return DROP_PROXY_UNSUPPORTED;
	if (pkt->family == CPY_AF_INET) {
		tuple.ipv4.saddr = *(const __u32 *)pkt->saddr;
		tuple.ipv4.daddr = *(const __u32 *)pkt->daddr;
		tuple.ipv4.sport = pkt->sport;
		tuple.ipv4.dport = cpy_htons(proxy_port);
		size = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.saddr, pkt->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, pkt->daddr, 16);
		tuple.ipv6.sport = pkt->sport;
		tuple.ipv6.dport = cpy_htons(proxy_port);
		size = sizeof(tuple.ipv6);
	}
	sk = bpf_sk_lookup_tcp(skb, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return DROP_PROXY_UNAVAILABLE;
	if (sk->state != 10 /* TCP_LISTEN */) {
		bpf_sk_release(sk);
		return DROP_PROXY_UNAVAILABLE;
	}
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (ret)
		return DROP_PROXY_UNAVAILABLE;
	skb->mark = MARK_TO_PROXY;
	return 0;
}

#endif /* CPY_PROXY_H */
