/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Connection tracking for TCP, UDP, ICMP and ICMPv6 (other protocols are
 * tracked by address pair and protocol only).
 *
 * One LRU hash per family. An entry is keyed by the tuple of the packet that
 * opened the connection plus the direction it had relative to the local
 * endpoint: CT_EGRESS (it left a local endpoint) or CT_INGRESS (it was going
 * into one). A packet in direction D with tuple T is:
 *
 *   CT_ESTABLISHED  when {T, D} exists (same direction as the opener),
 *   CT_REPLY        when {reverse(T), !D} exists,
 *   CT_RELATED      when it is an ICMP error about a tracked connection,
 *   CT_NEW          otherwise, and {T, D} is created.
 *
 * Delivery between two local endpoints records both sides: the source's
 * egress entry and the destination's ingress entry. That is what a policy
 * step needs to allow replies and established traffic without re-checking
 * rules. Entries expire (seconds on the monotonic clock, the same clock as
 * Python's time.monotonic()); the LRU evicts the oldest when the map is full.
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

#define CT_F_TX_CLOSING 0x1	/* FIN seen in the opening direction */
#define CT_F_RX_CLOSING 0x2	/* FIN seen in the reply direction */
#define CT_F_SEEN_REPLY 0x4	/* the other side answered at least once */
#define CT_F_RESET 0x8		/* RST seen */

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
	__u32 src_identity;	/* reserved for policy */
	__u16 proxy_port;	/* reserved for L7 redirection */
	__u16 pad1;
	__u32 pad2;
};

CPY_PINNED_MAP("lru_hash", struct ct_key4, struct ct_entry, cpy_ct4, CT_MAP_SIZE);
CPY_PINNED_MAP("lru_hash", struct ct_key6, struct ct_entry, cpy_ct6, CT_MAP_SIZE);

static __always_inline __u32 ct_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

static __always_inline __u32 ct_lifetime(const struct ct_entry *e, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP;
	if ((e->flags & CT_F_RESET) ||
	    (e->flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING)) ==
		    (CT_F_TX_CLOSING | CT_F_RX_CLOSING))
		return CT_LIFETIME_CLOSE;
	if (!(e->flags & CT_F_SEEN_REPLY))
		return CT_LIFETIME_SYN;
	return CT_LIFETIME_TCP;
}

/* Account one packet on an existing entry and push its expiry out. */
static __always_inline void ct_account(struct ct_entry *e, int reply,
				       const struct pkt_info *pkt, __u32 len, __u32 now)
{
	__u16 closing = 0;

	if (pkt->tcp_flags & TCP_FLAG_FIN)
		closing = reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
	if (pkt->tcp_flags & TCP_FLAG_RST)
		closing |= CT_F_RESET;
	if (reply) {
		__sync_fetch_and_add(&e->rx_packets, 1);
		__sync_fetch_and_add(&e->rx_bytes, len);
		e->rx_tcp_flags |= pkt->tcp_flags;
		closing |= CT_F_SEEN_REPLY;
	} else {
		__sync_fetch_and_add(&e->tx_packets, 1);
		__sync_fetch_and_add(&e->tx_bytes, len);
		e->tx_tcp_flags |= pkt->tcp_flags;
	}
	if ((e->flags | closing) != e->flags)
		e->flags |= closing;
	e->expires = now + ct_lifetime(e, pkt->proto);
}

/* A bare SYN on a connection that was closing starts a new one (port reuse). */
static __always_inline int ct_is_restart(const struct ct_entry *e, const struct pkt_info *pkt)
{
	return pkt->proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
	       (e->flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING | CT_F_RESET));
}

static __always_inline void ct_init_entry(struct ct_entry *e, const struct pkt_info *pkt,
					  __u32 len, __u32 now, __u32 src_identity)
{
	e->tx_packets = 1;
	e->tx_bytes = len;
	e->tx_tcp_flags = pkt->tcp_flags;
	e->created = now;
	e->src_identity = src_identity;
	e->expires = now + ct_lifetime(e, pkt->proto);
}

static __always_inline int icmp4_is_error(__u8 type)
{
	return type == 3 || type == 11 || type == 12;	/* unreachable, time exceeded, param */
}

static __always_inline int icmp6_is_error(__u8 type)
{
	return type >= 1 && type <= 4;	/* unreachable, too big, time exceeded, param */
}

/* Ports of the transport header quoted inside an ICMP error, as l4_load would set them. */
static __always_inline int ct_inner_ports(struct __sk_buff *skb, __u32 off, __u8 proto,
					  __be16 *sport, __be16 *dport)
{
	struct icmp_echo_hdr h;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP &&
	    proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h)) < 0)
		return -1;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		*sport = ((__be16 *)&h)[0];
		*dport = ((__be16 *)&h)[1];
	} else if (h.type == ICMP_ECHO_ || h.type == ICMP6_ECHO_REQUEST_) {
		*sport = h.id;
	} else if (h.type == ICMP_ECHOREPLY_ || h.type == ICMP6_ECHO_REPLY_) {
		*dport = h.id;
	}
	return 0;
}

static __always_inline int ct_related4(struct __sk_buff *skb, const struct pkt_info *pkt,
				       __u8 dir, __u32 len, __u32 now)
{
	struct ipv4_hdr inner;
	struct ct_key4 key = {};
	struct ct_entry *e;
	__u32 off = pkt->l4_off + 8;

	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return CT_NEW;
	/* The quoted packet is one we (or the peer) sent: look it up as an opener. */
	key.saddr = inner.saddr;
	key.daddr = inner.daddr;
	key.nexthdr = inner.protocol;
	key.flags = !dir;
	if (ct_inner_ports(skb, off + (inner.ver_ihl & 0x0f) * 4, inner.protocol,
			   &key.sport, &key.dport) < 0)
		return CT_NEW;
	e = cpy_ct4.lookup(&key);
	if (!e || e->expires < now)
		return CT_NEW;
	__sync_fetch_and_add(&e->rx_packets, 1);
	__sync_fetch_and_add(&e->rx_bytes, len);
	return CT_RELATED;
}

static __always_inline int ct_related6(struct __sk_buff *skb, const struct pkt_info *pkt,
				       __u8 dir, __u32 len, __u32 now)
{
	struct ipv6_hdr inner;
	struct ct_key6 key = {};
	struct ct_entry *e;
	__u32 off = pkt->l4_off + 8;

	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return CT_NEW;
	addr6_copy(key.saddr, inner.saddr);
	addr6_copy(key.daddr, inner.daddr);
	key.nexthdr = inner.nexthdr;
	key.flags = !dir;
	if (ct_inner_ports(skb, off + sizeof(inner), inner.nexthdr, &key.sport, &key.dport) < 0)
		return CT_NEW;
	e = cpy_ct6.lookup(&key);
	if (!e || e->expires < now)
		return CT_NEW;
	__sync_fetch_and_add(&e->rx_packets, 1);
	__sync_fetch_and_add(&e->rx_bytes, len);
	return CT_RELATED;
}

/*
 * Classify (and account) an IPv4 packet seen in direction @dir; create the
 * entry for a new connection. Returns CT_* or -1 when the entry could not
 * be created.
 */
static __always_inline int ct_lookup4(struct __sk_buff *skb, const struct pkt_info *pkt,
				      __u8 dir, __u32 src_identity)
{
	struct ct_key4 key = {};
	struct ct_entry *e;
	struct ct_entry fresh = {};
	__u32 now = ct_now();
	__u32 len = skb->len;

	key.saddr = *(const __u32 *)pkt->saddr;
	key.daddr = *(const __u32 *)pkt->daddr;
	key.sport = pkt->sport;
	key.dport = pkt->dport;
	key.nexthdr = pkt->proto;
	key.flags = dir;
	e = cpy_ct4.lookup(&key);
	if (e && e->expires >= now && !ct_is_restart(e, pkt)) {
		ct_account(e, 0, pkt, len, now);
		return CT_ESTABLISHED;
	}
	if (!e || e->expires < now) {
		struct ct_key4 rkey = {};
		struct ct_entry *r;

		rkey.saddr = key.daddr;
		rkey.daddr = key.saddr;
		rkey.sport = key.dport;
		rkey.dport = key.sport;
		rkey.nexthdr = key.nexthdr;
		rkey.flags = !dir;
		r = cpy_ct4.lookup(&rkey);
		if (r && r->expires >= now) {
			ct_account(r, 1, pkt, len, now);
			return CT_REPLY;
		}
		if (pkt->proto == IPPROTO_ICMP && icmp4_is_error(pkt->icmp_type))
			return ct_related4(skb, pkt, dir, len, now);
	}
	ct_init_entry(&fresh, pkt, len, now, src_identity);
	if (cpy_ct4.update(&key, &fresh) < 0)
		return -1;
	metric_count(METRIC_CT_CREATED, 0);
	return CT_NEW;
}

static __always_inline int ct_lookup6(struct __sk_buff *skb, const struct pkt_info *pkt,
				      __u8 dir, __u32 src_identity)
{
	struct ct_key6 key = {};
	struct ct_entry *e;
	struct ct_entry fresh = {};
	__u32 now = ct_now();
	__u32 len = skb->len;

	addr6_copy(key.saddr, pkt->saddr);
	addr6_copy(key.daddr, pkt->daddr);
	key.sport = pkt->sport;
	key.dport = pkt->dport;
	key.nexthdr = pkt->proto;
	key.flags = dir;
	e = cpy_ct6.lookup(&key);
	if (e && e->expires >= now && !ct_is_restart(e, pkt)) {
		ct_account(e, 0, pkt, len, now);
		return CT_ESTABLISHED;
	}
	if (!e || e->expires < now) {
		struct ct_key6 rkey = {};
		struct ct_entry *r;

		addr6_copy(rkey.saddr, pkt->daddr);
		addr6_copy(rkey.daddr, pkt->saddr);
		rkey.sport = key.dport;
		rkey.dport = key.sport;
		rkey.nexthdr = key.nexthdr;
		rkey.flags = !dir;
		r = cpy_ct6.lookup(&rkey);
		if (r && r->expires >= now) {
			ct_account(r, 1, pkt, len, now);
			return CT_REPLY;
		}
		if (pkt->proto == IPPROTO_ICMPV6 && icmp6_is_error(pkt->icmp_type))
			return ct_related6(skb, pkt, dir, len, now);
	}
	ct_init_entry(&fresh, pkt, len, now, src_identity);
	if (cpy_ct6.update(&key, &fresh) < 0)
		return -1;
	metric_count(METRIC_CT_CREATED, 0);
	return CT_NEW;
}

#endif /* CPY_CONNTRACK_H */
