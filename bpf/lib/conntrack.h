/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Connection tracking for TCP, UDP, ICMP and ICMPv6 (other protocols are
 * tracked by address pair and protocol only).
 *
 * One LRU hash per family. An entry is keyed by the tuple of the packet that
 * opened the connection plus the direction it had relative to the local
 * endpoint: CT_EGRESS (it left a local endpoint) or CT_INGRESS (it entered
 * one from the host stack). Lookups only classify; the caller creates the
 * entry (ct_create) once policy has allowed a new connection, so a denied
 * packet never leaves state behind that a retransmission could ride on.
 *
 * Seen leaving endpoint S (from_container), a packet with tuple T is:
 *
 *   CT_ESTABLISHED  {T, EGRESS} exists,
 *   CT_REPLY        {reverse(T), INGRESS} exists (S accepted it), or the
 *                   destination is local and {reverse(T), EGRESS} exists
 *                   with CT_F_LOCAL (the peer opened it by direct delivery),
 *   CT_RELATED      an ICMP error about a connection S accepted, sent back
 *                   to its peer (see ct_related),
 *   CT_UNRELATED    any other ICMP error: the caller drops it,
 *   CT_NEW          otherwise, for TCP only a bare SYN (see below),
 *   CT_MISSING_SYN  a TCP packet without an entry that is no bare SYN: the
 *                   caller drops it (DROP_CT_MISSING_SYN).
 *
 * Seen entering endpoint D from the host stack (to_container), or on direct
 * delivery when the sender's entry does not cover D:
 *
 *   CT_ESTABLISHED  {T, INGRESS} exists,
 *   CT_REPLY        {reverse(T), EGRESS} exists (D opened it),
 *   CT_RELATED      an ICMP error about a connection D opened,
 *   CT_UNRELATED    any other ICMP error,
 *   CT_NEW          otherwise (CT_MISSING_SYN for TCP that is no bare SYN).
 *
 * Only a SYN opens a TCP connection: an ACK, FIN or RST of no tracked
 * connection (a flushed or expired entry, a forged segment) creates no state
 * and does not reach policy as new. TCP state is kept as far as lifetimes
 * need it: an entry lives CT_LIFETIME_SYN until the other side answers,
 * CT_LIFETIME_TCP once it has, and CT_LIFETIME_CLOSE after a RST or a FIN in
 * each direction; a bare SYN on a closing entry opens a new connection (port
 * reuse). Expired entries are removed by the agent's garbage collector.
 *
 * An ICMP error is never looked up as a connection of its own (a forged
 * error must not ride on, say, an ICMP timestamp exchange): it is related to
 * the connection it quotes, or dropped.
 *
 * Direct delivery between two local endpoints keeps ONE entry, {T, EGRESS}
 * with CT_F_LOCAL: it stands for the sender's egress and the receiver's
 * ingress alike (the callers check both sides' policy for every packet in the
 * opening direction), so every packet of such a connection costs one lookup
 * (two for replies) instead of one per side.
 *
 * Per-packet work is kept free of atomics and of needless stores: the
 * counters are plain adds (statistics; a lost increment under a race is
 * acceptable), flags and the expiry are only written when they change (the
 * expiry has one-second resolution), so an established flow does not bounce
 * the entry's cache line between CPUs for bookkeeping. CT_ACCOUNTING=0 drops
 * the packet and byte counters altogether.
 *
 * Entries expire (seconds on the monotonic clock, the same clock as Python's
 * time.monotonic()); the LRU evicts the oldest when the map is full.
 */
#ifndef CPY_CONNTRACK_H
#define CPY_CONNTRACK_H

#include "lib/common.h"
#include "lib/ipv4.h"
#include "lib/ipv6.h"
#include "lib/l4.h"
#include "lib/metrics.h"

#define CT_EGRESS 0
#define CT_INGRESS 1

#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2
#define CT_RELATED 3
#define CT_UNRELATED 4	/* an ICMP error that belongs to no connection of the endpoint */
#define CT_MISSING_SYN 5	/* TCP without an entry that is no bare SYN: no new connection */
#define CT_STATE_MASK 0x0f
/* Returned with the state: the entry also stands for the local peer's side. */
#define CT_COVERS_PEER 0x10
/* Returned with the state: the packet belongs to the proxy (lib/proxy.h). */
#define CT_TO_PROXY 0x20
/* Returned with a reply's state: the connection came through the host stack. */
#define CT_VIA_STACK 0x40

#define CT_F_TX_CLOSING 0x1	/* FIN seen in the opening direction */
#define CT_F_RX_CLOSING 0x2	/* FIN seen in the reply direction */
#define CT_F_SEEN_REPLY 0x4	/* the other side answered at least once */
#define CT_F_RESET 0x8		/* RST seen */
#define CT_F_LOCAL 0x10		/* egress entry delivered directly: covers the peer's ingress */
#define CT_F_PROXY_REDIRECT 0x20	/* redirected to an L7 proxy: packets go to its socket */
#define CT_F_FROM_PROXY 0x40	/* opened by an L7 proxy: replies go back to its socket */
/*
 * Ingress entry of a connection a local endpoint opened that reached this one
 * through the host stack rather than by direct delivery: the node rewrote it
 * on the way (a hostPort DNAT, say), so replies must go back through the
 * stack for the reverse NAT instead of straight into the peer.
 */
#define CT_F_VIA_STACK 0x80

#ifndef CT_LIFETIME_TCP
#define CT_LIFETIME_TCP 21600
#endif
#ifndef CT_LIFETIME_SYN
#define CT_LIFETIME_SYN 60
#endif
#ifndef CT_LIFETIME_NONTCP
#define CT_LIFETIME_NONTCP 60
#endif
#ifndef CT_LIFETIME_CLOSE
#define CT_LIFETIME_CLOSE 10
#endif
#ifndef CT_ACCOUNTING
#define CT_ACCOUNTING 1
#endif

struct ct_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 nexthdr;
	__u8 flags;		/* CT_EGRESS / CT_INGRESS */
	__u16 pad;
};

struct ct_key6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 nexthdr;
	__u8 flags;
	__u16 pad;
};

struct ct_entry {
	__u64 tx_packets;	/* opening direction */
	__u64 tx_bytes;
	__u64 rx_packets;	/* reply direction */
	__u64 rx_bytes;
	__u32 expires;		/* monotonic seconds */
	__u32 created;
	__u16 flags;		/* CT_F_* */
	__u8 tx_tcp_flags;	/* union of TCP flags seen each way */
	__u8 rx_tcp_flags;
	__u32 src_identity;	/* identity of the side that opened the connection */
	__u16 proxy_port;	/* reserved for L7 redirection */
	__u16 pad1;
	__u32 pad2;
};

CPY_PINNED_MAP("lru_hash", struct ct_key4, struct ct_entry, cpy_ct4, CT_MAP_SIZE);
CPY_PINNED_MAP("lru_hash", struct ct_key6, struct ct_entry, cpy_ct6, CT_MAP_SIZE);

/*
 * Seconds on the monotonic clock. The coarse variant reads the time of the
 * last tick instead of the clock source (about 20 ns less per packet here);
 * a tick of error is nothing against one-second expiry resolution.
 */
static __always_inline __u32 ct_now(void)
{
	return (__u32)(bpf_ktime_get_coarse_ns() / 1000000000ULL);
}

/*
 * The entry for the tuple of @t (a parsed packet, or the packet an ICMP error
 * quotes), or of its reverse, in direction @dir; NULL when absent.
 */
static __always_inline struct ct_entry *ct_find(const struct pkt_info *t, int reverse, __u8 dir)
{
	if (t->family == CPY_AF_INET) {
		struct ct_key4 key = {};

		key.saddr = *(const __u32 *)(reverse ? t->daddr : t->saddr);
		key.daddr = *(const __u32 *)(reverse ? t->saddr : t->daddr);
		key.sport = reverse ? t->dport : t->sport;
		key.dport = reverse ? t->sport : t->dport;
		key.nexthdr = t->proto;
		key.flags = dir;
		return cpy_ct4.lookup(&key);
	} else {
		struct ct_key6 key = {};

		addr6_copy(key.saddr, reverse ? t->daddr : t->saddr);
		addr6_copy(key.daddr, reverse ? t->saddr : t->daddr);
		key.sport = reverse ? t->dport : t->sport;
		key.dport = reverse ? t->sport : t->dport;
		key.nexthdr = t->proto;
		key.flags = dir;
		return cpy_ct6.lookup(&key);
	}
}

static __always_inline __u32 ct_lifetime(__u16 flags, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP;
	if ((flags & CT_F_RESET) ||
	    (flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING)) == (CT_F_TX_CLOSING | CT_F_RX_CLOSING))
		return CT_LIFETIME_CLOSE;
	if (!(flags & CT_F_SEEN_REPLY))
		return CT_LIFETIME_SYN;
	return CT_LIFETIME_TCP;
}

/*
 * Account one packet on an existing entry and push its expiry out. Stores
 * only what changes: on an established flow that is the counters (if
 * compiled in) and, once a second, the expiry.
 */
static __always_inline void ct_account(struct ct_entry *e, int reply,
				       const struct pkt_info *pkt, __u32 len, __u32 now)
{
	__u16 flags = e->flags;
	__u16 set = 0;
	__u32 expires;

	if (pkt->tcp_flags & TCP_FLAG_FIN)
		set = reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
	if (pkt->tcp_flags & TCP_FLAG_RST)
		set |= CT_F_RESET;
	if (reply) {
		set |= CT_F_SEEN_REPLY;
#if CT_ACCOUNTING
		e->rx_packets += 1;
		e->rx_bytes += len;
#endif
		if ((e->rx_tcp_flags | pkt->tcp_flags) != e->rx_tcp_flags)
			e->rx_tcp_flags |= pkt->tcp_flags;
	} else {
#if CT_ACCOUNTING
		e->tx_packets += 1;
		e->tx_bytes += len;
#endif
		if ((e->tx_tcp_flags | pkt->tcp_flags) != e->tx_tcp_flags)
			e->tx_tcp_flags |= pkt->tcp_flags;
	}
	if ((flags | set) != flags) {
		flags |= set;
		e->flags = flags;
	}
	expires = now + ct_lifetime(flags, pkt->proto);
	if (e->expires != expires)
		e->expires = expires;
}

static __always_inline int ct_live(const struct ct_entry *e, __u32 now)
{
	return e && e->expires >= now;
}

/* A bare SYN on a connection that was closing starts a new one (port reuse). */
static __always_inline int ct_is_restart(const struct ct_entry *e, const struct pkt_info *pkt)
{
	return pkt->proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
	       (e->flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING | CT_F_RESET));
}

/* No entry: a new connection, unless it is TCP and not a bare SYN. */
static __always_inline int ct_new(const struct pkt_info *pkt)
{
	if (pkt->proto == IPPROTO_TCP &&
	    (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST | TCP_FLAG_FIN)) !=
		    TCP_FLAG_SYN)
		return CT_MISSING_SYN;
	return CT_NEW;
}

static __always_inline int icmp_is_error(const struct pkt_info *pkt)
{
	if (pkt->proto == IPPROTO_ICMP)	/* unreachable, time exceeded, parameter problem */
		return pkt->icmp_type == 3 || pkt->icmp_type == 11 || pkt->icmp_type == 12;
	if (pkt->proto == IPPROTO_ICMPV6)	/* unreachable, too big, time exceeded, param */
		return pkt->icmp_type >= 1 && pkt->icmp_type <= 4;
	return 0;
}

/* Ports of the transport header quoted inside an ICMP error, as l4_load would set them. */
static __always_inline int ct_inner_ports(struct __sk_buff *skb, __u32 off, struct pkt_info *t)
{
	struct icmp_echo_hdr h;

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP && t->proto != IPPROTO_ICMP &&
	    t->proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h)) < 0)
		return -1;
	if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP) {
		t->sport = ((__be16 *)&h)[0];
		t->dport = ((__be16 *)&h)[1];
	} else if (h.type == ICMP_ECHO_ || h.type == ICMP6_ECHO_REQUEST_) {
		t->sport = h.id;
	} else if (h.type == ICMP_ECHOREPLY_ || h.type == ICMP6_ECHO_REPLY_) {
		t->dport = h.id;
	}
	return 0;
}

/* The connection an ICMP error quotes, in the direction of its quoted packet. */
static __always_inline int ct_inner_tuple(struct __sk_buff *skb, const struct pkt_info *pkt,
					  struct pkt_info *t)
{
	__u32 off = pkt->l4_off + 8;

	t->family = pkt->family;
	if (pkt->family == CPY_AF_INET) {
		struct ipv4_hdr inner;

		if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
			return -1;
		*(__u32 *)t->saddr = inner.saddr;
		*(__u32 *)t->daddr = inner.daddr;
		t->proto = inner.protocol;
		off += (inner.ver_ihl & 0x0f) * 4;
	} else {
		struct ipv6_hdr inner;
		__u8 nh;

		if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
			return -1;
		addr6_copy(t->saddr, inner.saddr);
		addr6_copy(t->daddr, inner.daddr);
		off += sizeof(inner);
		/* The same walk as for the packet itself, so the tuples agree. */
		nh = inner.nexthdr;
		if (ipv6_skip_exthdrs(skb, &off, &nh, 0) < 0)
			return -1;
		t->proto = nh;
	}
	return ct_inner_ports(skb, off, t);
}

static __always_inline int ct_addr_eq(__u8 family, const __u8 *a, const __u8 *b)
{
	return family == CPY_AF_INET ? addr4_eq(a, b) : addr6_eq(a, b);
}

/*
 * An ICMP error is related when the packet it quotes belongs to a live
 * connection of the endpoint it travels to or from: one opened towards the
 * endpoint (@opened_dir CT_INGRESS, seen leaving it) or by it (CT_EGRESS,
 * seen entering it). @local_too: also accept a CT_F_LOCAL egress entry.
 *
 * And it must travel between the two ends of that connection: to the sender
 * of the quoted packet (outer destination = inner source) and, leaving an
 * endpoint, from the one the quoted packet was for (outer source = inner
 * destination: an endpoint is no router, it only reports on packets it
 * received). Otherwise one container could reset or throttle others' flows
 * with errors quoting their tuples. Entering an endpoint, any router on the
 * path may send the error, so its source is not checked.
 */
static __always_inline int ct_related(struct __sk_buff *skb, const struct pkt_info *pkt,
				      __u8 opened_dir, int local_too, __u32 now)
{
	struct pkt_info inner = {};
	struct ct_entry *e;

	if (ct_inner_tuple(skb, pkt, &inner) < 0)
		return CT_UNRELATED;
	if (!ct_addr_eq(pkt->family, inner.saddr, pkt->daddr))
		return CT_UNRELATED;
	if (opened_dir == CT_INGRESS && !ct_addr_eq(pkt->family, inner.daddr, pkt->saddr))
		return CT_UNRELATED;
	e = ct_find(&inner, 0, opened_dir);
	if (!ct_live(e, now) && local_too) {
		e = ct_find(&inner, 0, CT_EGRESS);
		if (e && !(e->flags & CT_F_LOCAL))
			e = 0;
	}
	if (!ct_live(e, now))
		return CT_UNRELATED;
	ct_account(e, 1, pkt, skb->len, now);
	return CT_RELATED;
}

/*
 * Classify a packet leaving a local endpoint. @dst_local: its destination is
 * a local endpoint (direct delivery). Returns CT_* | CT_COVERS_PEER.
 */
static __always_inline int ct_lookup_egress(struct __sk_buff *skb, const struct pkt_info *pkt,
					    int dst_local, __u32 now)
{
	struct ct_entry *e;

	if (icmp_is_error(pkt))
		return ct_related(skb, pkt, CT_INGRESS, dst_local, now);
	e = ct_find(pkt, 0, CT_EGRESS);
	if (ct_live(e, now)) {
		if (ct_is_restart(e, pkt))
			return CT_NEW;
		ct_account(e, 0, pkt, skb->len, now);
		return CT_ESTABLISHED | ((e->flags & CT_F_LOCAL) ? CT_COVERS_PEER : 0) |
		       ((e->flags & CT_F_PROXY_REDIRECT) ? CT_TO_PROXY : 0);
	}
	if (dst_local) {
		e = ct_find(pkt, 1, CT_EGRESS);
		if (ct_live(e, now) && (e->flags & CT_F_LOCAL)) {
			ct_account(e, 1, pkt, skb->len, now);
			return CT_REPLY | CT_COVERS_PEER;
		}
	}
	e = ct_find(pkt, 1, CT_INGRESS);
	if (ct_live(e, now)) {
		ct_account(e, 1, pkt, skb->len, now);
		return CT_REPLY | ((e->flags & CT_F_FROM_PROXY) ? CT_TO_PROXY : 0) |
		       ((e->flags & CT_F_VIA_STACK) ? CT_VIA_STACK : 0);
	}
	return ct_new(pkt);
}

/* Classify a packet entering a local endpoint. Returns CT_*. */
static __always_inline int ct_lookup_ingress(struct __sk_buff *skb, const struct pkt_info *pkt,
					     __u32 now)
{
	struct ct_entry *e;

	if (icmp_is_error(pkt))
		return ct_related(skb, pkt, CT_EGRESS, 0, now);
	e = ct_find(pkt, 0, CT_INGRESS);
	if (ct_live(e, now)) {
		if (ct_is_restart(e, pkt))
			return CT_NEW;
		ct_account(e, 0, pkt, skb->len, now);
		return CT_ESTABLISHED | ((e->flags & CT_F_PROXY_REDIRECT) ? CT_TO_PROXY : 0);
	}
	e = ct_find(pkt, 1, CT_EGRESS);
	if (ct_live(e, now)) {
		ct_account(e, 1, pkt, skb->len, now);
		return CT_REPLY;
	}
	return ct_new(pkt);
}

/*
 * Record a new connection (after policy allowed it). @src_identity: who
 * opened it. Returns 0, or -1 when the map refused the entry.
 */
static __always_inline int ct_create(struct __sk_buff *skb, const struct pkt_info *pkt,
				     __u8 dir, __u16 flags, __u32 src_identity, __u32 now)
{
	struct ct_entry e = {};
	int ret;

#if CT_ACCOUNTING
	e.tx_packets = 1;
	e.tx_bytes = skb->len;
#endif
	e.tx_tcp_flags = pkt->tcp_flags;
	e.flags = flags;
	e.created = now;
	e.src_identity = src_identity;
	e.expires = now + ct_lifetime(flags, pkt->proto);
	if (pkt->family == CPY_AF_INET) {
		struct ct_key4 key = {};

		key.saddr = *(const __u32 *)pkt->saddr;
		key.daddr = *(const __u32 *)pkt->daddr;
		key.sport = pkt->sport;
		key.dport = pkt->dport;
		key.nexthdr = pkt->proto;
		key.flags = dir;
		ret = cpy_ct4.update(&key, &e);
	} else {
		struct ct_key6 key = {};

		addr6_copy(key.saddr, pkt->saddr);
		addr6_copy(key.daddr, pkt->daddr);
		key.sport = pkt->sport;
		key.dport = pkt->dport;
		key.nexthdr = pkt->proto;
		key.flags = dir;
		ret = cpy_ct6.update(&key, &e);
	}
	if (ret < 0)
		return -1;
	metric_count(METRIC_CT_CREATED, 0);
	return 0;
}

#endif /* CPY_CONNTRACK_H */
