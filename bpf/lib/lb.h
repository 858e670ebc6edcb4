/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * L3/L4 load balancing: services with virtual addresses (frontends).
 *
 * A client endpoint's from_container balances its own traffic: a packet to a
 * frontend (address, port, TCP/UDP) gets a backend and its destination is
 * rewritten (DNAT) before anything else looks at it, so conntrack, policy
 * and delivery all see the real destination: a local backend's ingress
 * policy is checked with the client's identity, egress policy with the
 * backend's. Replies are rewritten back to the frontend (reverse NAT) where
 * they enter the client: in the backend's from_container on direct
 * delivery, in to_container when they come through the host stack, in
 * from_overlay from another node. There is no iptables anywhere, and the
 * cost of a packet does not depend on how many services exist: one hash
 * lookup says "not a frontend".
 *
 * Maps (both families share them; IPv4 in the first 4 bytes of an address):
 * the service maps and the backend choice are in lib/lb_core.h (shared with
 * the node's socket-level balancer, bpf_sock.c); the packet path adds two LRU
 * maps of its own, written by the programs:
 *
 *   cpy_lb_conn      {client, frontend} tuple -> the backend chosen for
 *                    this connection (address and port kept, so that a
 *                    connection to a backend removed since is left to finish).
 *   cpy_lb_rev       {client, backend} tuple -> the frontend: how
 *                    replies are rewritten.
 *
 * A backend is chosen per connection: a new TCP connection (a SYN without
 * ACK) or a flow with no live cpy_lb_conn entry takes a random slot, or the
 * client's affine backend while that is live and still in the service.
 * Later packets, including later IP fragments (their ports come from
 * lib/ipfrag.h), follow the entry.
 *
 * Only TCP and UDP are balanced; anything else to a frontend address takes
 * the normal path. A frontend with no backends drops new connections
 * (DROP_NO_SERVICE_BACKEND) rather than let them go to an address that is
 * nobody's.
 */
#ifndef CPY_LB_H
#define CPY_LB_H

#include "lib/common.h"
#include "lib/drop.h"
#include "lib/l4.h"
#include "lib/lb_core.h"
#include "lib/trace.h"

/* Not in lib/drop.h's range of the others, so that headers may grow independently. */
#define DROP_NO_SERVICE_BACKEND 24	/* a new connection to a frontend without backends */

struct lb_tuple {
	__u8 saddr[16];		/* client */
	__u8 daddr[16];		/* frontend (cpy_lb_conn) or backend (cpy_lb_rev) */
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

CPY_PINNED_MAP("lru_hash", struct lb_tuple, struct lb_nat, cpy_lb_conn, LB_CONN_MAP_SIZE);
CPY_PINNED_MAP("lru_hash", struct lb_tuple, struct lb_nat, cpy_lb_rev, LB_CONN_MAP_SIZE);

/*
 * A trace event for each connection given a backend, for `cilium-py monitor`
 * (the frontend and the backend chosen): only while a reader wants trace
 * events (the gate of lib/trace.h), and then at most LB_TRACE_PER_SEC a second
 * per CPU so that a connection storm costs no perf ring.
 */
#define EVENT_LB_TRACE 20
#ifndef LB_TRACE_PER_SEC
#define LB_TRACE_PER_SEC 100
#endif

struct lb_trace_event {
	__u8 type;		/* EVENT_LB_TRACE */
	__u8 family;
	__u8 proto;
	__u8 pad;
	__u32 ifindex;		/* the client's host veth */
	__u32 svc_id;
	__be16 sport;		/* client port */
	__be16 fport;		/* frontend port */
	__be16 bport;		/* backend port */
	__u16 pad2;
	__u8 saddr[16];		/* client */
	__u8 faddr[16];		/* frontend */
	__u8 baddr[16];		/* backend */
};

struct lb_trace_rate {
	__u64 window_start;
	__u64 sent;
};

BPF_TABLE("percpu_array", __u32, struct lb_trace_rate, cpy_lb_trace_rate, 1);

/* Offset of the TCP/UDP checksum field, 0 when the packet carries no L4 header. */
static __always_inline __u32 lb_csum_off(const struct pkt_info *pkt)
{
	if (pkt->frag == PKT_FRAG_LATER)
		return 0;
	return pkt->l4_off + (pkt->proto == IPPROTO_TCP ? 16 : 6);
}

/*
 * Rewrite one address and port of the packet (@dst: the destination, else the
 * source) to @addr/@port, with the IP and transport checksums, and keep
 * @pkt in step. Returns 0 or -1.
 */
static __always_inline int lb_rewrite(struct __sk_buff *skb, struct pkt_info *pkt, int dst,
				      const __u8 *addr, __be16 port)
{
	__u8 *cur = dst ? pkt->daddr : pkt->saddr;
	__be16 old_port = dst ? pkt->dport : pkt->sport;
	__u32 csum_off = lb_csum_off(pkt);
	__u64 mangled = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (pkt->family == CPY_AF_INET) {
		__be32 old = *(__u32 *)cur, new = *(const __u32 *)addr;
		__u32 off = ETH_HLEN_ + (dst ? 16 : 12);

		if (bpf_l3_csum_replace(skb, ETH_HLEN_ + 10, old, new, 4) < 0)
			return -1;
		if (csum_off &&
		    bpf_l4_csum_replace(skb, csum_off, old, new, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, off, &new, 4, 0) < 0)
			return -1;
		*(__u32 *)cur = new;
	} else {
		__u8 new[16];
		__u32 off = ETH_HLEN_ + (dst ? 24 : 8);
		__s64 diff;

		addr6_copy(new, addr);
		diff = bpf_csum_diff((__be32 *)cur, 16, (__be32 *)new, 16, 0);
		if (csum_off &&
		    bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, off, new, 16, 0) < 0)
			return -1;
		addr6_copy(cur, new);
	}
	if (port == old_port)
		return 0;
	if (csum_off) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, pkt->l4_off + (dst ? 2 : 0), &port, 2, 0) < 0)
			return -1;
	}
	if (dst)
		pkt->dport = port;
	else
		pkt->sport = port;
	return 0;
}

static __always_inline void lb_tuple_of(struct lb_tuple *t, const struct pkt_info *pkt)
{
	lb_addr_copy(t->saddr, pkt->saddr, pkt->family);
	lb_addr_copy(t->daddr, pkt->daddr, pkt->family);
	t->sport = pkt->sport;
	t->dport = pkt->dport;
	t->proto = pkt->proto;
	t->family = pkt->family;
}

static __always_inline void lb_trace(struct __sk_buff *skb, const struct pkt_info *pkt,
				     __u32 svc_id, const struct lb_backend *be)
{
	__u32 zero = 0;
	struct lb_trace_rate *rate = cpy_lb_trace_rate.lookup(&zero);
	struct lb_trace_event ev = {};
	__u64 now = bpf_ktime_get_ns();

	if (!rate || !trace_on(TRACE_F_TRACE))	/* only while a monitor wants traces */
		return;
	if (now - rate->window_start >= 1000000000ULL) {
		rate->window_start = now;
		rate->sent = 0;
	}
	if (rate->sent >= LB_TRACE_PER_SEC)
		return;
	rate->sent += 1;
	ev.type = EVENT_LB_TRACE;
	ev.family = pkt->family;
	ev.proto = pkt->proto;
	ev.ifindex = skb->ifindex;
	ev.svc_id = svc_id;
	ev.sport = pkt->sport;
	ev.fport = pkt->dport;
	ev.bport = be->port;
	addr6_copy(ev.saddr, pkt->saddr);
	addr6_copy(ev.faddr, pkt->daddr);
	addr6_copy(ev.baddr, be->addr);
	cpy_events.perf_submit(skb, &ev, sizeof(ev));
}

#define LB_NOT_SERVICE 0
#define LB_TRANSLATED 1

/*
 * Balance a packet leaving a client endpoint: when it is for a frontend,
 * pick (or follow) its connection's backend and rewrite the destination.
 * Returns LB_NOT_SERVICE, LB_TRANSLATED, or -DROP_* to drop the packet.
 */
static __always_inline int lb_from_container(struct __sk_buff *skb, struct pkt_info *pkt,
					     __u32 now)
{
	struct lb_svc_key key = {};
	struct lb_svc_value *svc;
	struct lb_tuple t = {};
	struct lb_nat *conn, nat = {};
	struct lb_backend *be;
	__u32 backend_id;

	if (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP)
		return LB_NOT_SERVICE;
	lb_addr_copy(key.addr, pkt->daddr, pkt->family);
	key.port = pkt->dport;
	key.proto = pkt->proto;
	key.family = pkt->family;
	svc = cpy_lb_svc.lookup(&key);
	if (!svc)
		return LB_NOT_SERVICE;

	lb_tuple_of(&t, pkt);
	conn = cpy_lb_conn.lookup(&t);
	/* A flow of a service deleted since (another id, same frontend) is new. */
	if (conn && conn->expires >= now && conn->svc_id == svc->svc_id &&
	    !(pkt->proto == IPPROTO_TCP &&
	      (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)) {
		__u32 expires = now + lb_lifetime(pkt->proto);

		if (conn->expires != expires)
			conn->expires = expires;
		if (lb_rewrite(skb, pkt, 1, conn->addr, conn->port) < 0)
			return -DROP_WRITE_ERROR;
		return LB_TRANSLATED;
	}

	if (svc->count == 0)
		return -DROP_NO_SERVICE_BACKEND;
	backend_id = lb_choose(&key, svc, pkt->saddr, pkt->family, now);
	be = backend_id ? cpy_lb_backend.lookup(&backend_id) : 0;
	if (!be)
		return -DROP_NO_SERVICE_BACKEND;

	/* The reply tuple first: a reply must never find no way back. */
	nat.svc_id = svc->svc_id;
	nat.backend_id = backend_id;
	lb_addr_copy(nat.addr, pkt->daddr, pkt->family);
	nat.port = pkt->dport;
	{
		struct lb_tuple r = t;

		lb_addr_copy(r.daddr, be->addr, pkt->family);
		r.dport = be->port;
		if (cpy_lb_rev.update(&r, &nat) < 0)
			return -DROP_CT_ERROR;
	}
	lb_addr_copy(nat.addr, be->addr, pkt->family);
	nat.port = be->port;
	nat.expires = now + lb_lifetime(pkt->proto);
	if (cpy_lb_conn.update(&t, &nat) < 0)
		return -DROP_CT_ERROR;
	lb_trace(skb, pkt, svc->svc_id, be);
	if (lb_rewrite(skb, pkt, 1, be->addr, be->port) < 0)
		return -DROP_WRITE_ERROR;
	return LB_TRANSLATED;
}

/*
 * A reply on its way into a client: when it comes from the backend of a
 * balanced connection, rewrite its source back to the frontend. Called for
 * packets conntrack classified as replies only. Returns 0 or -DROP_*.
 */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct pkt_info *pkt)
{
	struct lb_tuple t = {};
	struct lb_nat *nat;

	if (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP)
		return 0;
	/* The reply's tuple reversed is the client's {client, backend} tuple. */
	lb_addr_copy(t.saddr, pkt->daddr, pkt->family);
	lb_addr_copy(t.daddr, pkt->saddr, pkt->family);
	t.sport = pkt->dport;
	t.dport = pkt->sport;
	t.proto = pkt->proto;
	t.family = pkt->family;
	nat = cpy_lb_rev.lookup(&t);
	if (!nat)
		return 0;
	if (lb_rewrite(skb, pkt, 0, nat->addr, nat->port) < 0)
		return -DROP_WRITE_ERROR;
	return 0;
}

#endif /* CPY_LB_H */
