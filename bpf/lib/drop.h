/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Drops: every dropped packet is counted per reason (pinned per-CPU array,
 * survives agent restarts) and reported as one perf event for the monitor,
 * at most DROP_EVENTS_PER_SEC a second per interface the program runs on.
 * Why a limit: without one a container that sends denied packets as fast as it
 * can makes as many perf events, flooding the agent and every monitor. The
 * interface is the one whose traffic caused the drop (the sender's veth on
 * direct delivery), so a flood suppresses only its own events. Suppressed
 * events are counted per interface (cpy_drop_notify.suppressed, only ever
 * incremented) and the agent reports the growth in the event stream.
 * The reason codes are part of the agent's API: keep them in sync with
 * plugin/datapath/maps.py (DropReason).
 */
#ifndef CPY_DROP_H
#define CPY_DROP_H

#include "lib/common.h"
#include "lib/metrics.h"

#define DROP_INVALID_SMAC 1	/* source MAC is not the endpoint's */
#define DROP_INVALID_SIP 2	/* source IPv4/IPv6 (or ARP sender IP) is not the endpoint's */
#define DROP_UNSUPPORTED_L3 3	/* ethertype other than ARP/IPv4/IPv6 */
#define DROP_CT_ERROR 4		/* conntrack entry could not be created (map full) */
#define DROP_POLICY_DENIED 5	/* no policy entry allows a new connection */
#define DROP_UNKNOWN_ENDPOINT 6	/* program runs on a device with no endpoint config */
#define DROP_INVALID_PACKET 7	/* truncated or malformed headers */
#define DROP_WRITE_ERROR 8	/* rewriting the packet (MAC, TTL, checksum) failed */
#define DROP_FRAG_NOT_FOUND 9	/* a later fragment whose first fragment was not seen */
#define DROP_EXTHDR_CHAIN 10	/* more IPv6 extension headers than the walker follows */
#define DROP_PROXY_UNAVAILABLE 11	/* redirect to an L7 proxy that does not listen */
#define DROP_PROXY_UNSUPPORTED 12	/* redirect of something other than TCP */
#define DROP_ICMP_UNRELATED 13	/* an ICMP error about no connection of its peers' */
#define DROP_FORBIDDEN_ICMPV6 14	/* a router's ND message (RA, redirect) from a container */
#define DROP_CT_MISSING_SYN 15	/* a TCP packet of no tracked connection that is no SYN */
#define DROP_FAMILY_DISABLED 16	/* IPv4 or IPv6 while the agent has that family turned off */

#define EVENT_DROP 1

struct drop_event {
	__u8 type;		/* EVENT_DROP */
	__u8 reason;		/* DROP_* */
	__u8 dir;		/* DIR_FROM_CONTAINER / DIR_TO_CONTAINER */
	__u8 family;		/* 0, CPY_AF_INET, CPY_AF_INET6 */
	__u32 ep_id;		/* endpoint the verdict is about (0: unknown) */
	__u32 ifindex;		/* that endpoint's host veth */
	__u32 src_identity;	/* identity of the sender (0: not resolved) */
	__u32 dst_identity;	/* identity of the receiver (0: not resolved) */
	__u32 len;		/* bytes on the wire */
	__u16 eth_proto;
	__u8 proto;
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 smac[6];
	__u8 dmac[6];
};

#ifndef DROP_EVENTS_PER_SEC
#define DROP_EVENTS_PER_SEC 100
#endif
#define DROP_EVENTS_WINDOW_NS 1000000000ULL

/* Per interface: the current one-second window and the events suppressed so far. */
struct drop_notify {
	__u64 window_start;	/* bpf_ktime_get_ns() when the window began */
	__u32 sent;		/* events sent in this window */
	__u32 ifindex;		/* the key again, for the reader */
	__u64 suppressed;	/* events not sent since the entry was created */
};

BPF_PERF_OUTPUT(cpy_events);
/* Not pinned: rate state need not survive the agent; LRU so it never fills. */
BPF_TABLE("lru_hash", __u32, struct drop_notify, cpy_drop_notify, ENDPOINT_MAP_SIZE);
/* Slot: reason + dir * DROP_REASON_MAX (drops by direction and reason). */
CPY_PINNED_MAP("percpu_array", __u32, struct metric_value, cpy_drops, 2 * DROP_REASON_MAX);

/*
 * Whether a drop on @ifindex may make an event: at most DROP_EVENTS_PER_SEC in
 * a window of one second. Windows are reset without a lock, so on several CPUs
 * at once a few more may pass; the suppressed count is atomic and exact.
 */
static __always_inline int drop_event_allowed(__u32 ifindex)
{
	__u64 now = bpf_ktime_get_ns();
	struct drop_notify *n = cpy_drop_notify.lookup(&ifindex);

	if (!n) {
		struct drop_notify fresh = {};

		fresh.window_start = now;
		fresh.sent = 1;
		fresh.ifindex = ifindex;
		cpy_drop_notify.update(&ifindex, &fresh);
		return 1;
	}
	if (now - n->window_start >= DROP_EVENTS_WINDOW_NS) {
		n->window_start = now;
		n->sent = 1;
		return 1;
	}
	if (n->sent < DROP_EVENTS_PER_SEC) {
		__sync_fetch_and_add(&n->sent, 1);
		return 1;
	}
	__sync_fetch_and_add(&n->suppressed, 1);
	return 0;
}

/*
 * Count, report (within the rate limit) and return the verdict that drops the packet. @ep_id and
 * @ifindex name the endpoint the verdict is about: on direct delivery an
 * ingress policy drop concerns the destination, not the veth the program
 * runs on.
 */
static __always_inline int send_drop(struct __sk_buff *skb, const struct pkt_info *pkt,
				     __u8 reason, __u8 dir, __u32 ep_id, __u32 ifindex,
				     __u32 src_identity, __u32 dst_identity)
{
	struct drop_event ev = {};
	__u32 slot = reason + (dir ? DROP_REASON_MAX : 0);
	struct metric_value *m = cpy_drops.lookup(&slot);
	__u32 dev;

	/* A fresh ctx pointer: clang would reuse a caller's &skb->ifindex, which the
	 * verifier refuses (ctx pointers may not be offset). */
	asm volatile("" : "+r"(skb));
	dev = skb->ifindex;

	if (m) {
		m->packets += 1;
		m->bytes += skb->len;
	}
	if (!drop_event_allowed(dev))
		return TC_ACT_SHOT;
	ev.type = EVENT_DROP;
	ev.reason = reason;
	ev.dir = dir;
	ev.family = pkt->family;
	ev.ep_id = ep_id;
	ev.ifindex = ifindex;
	ev.src_identity = src_identity;
	ev.dst_identity = dst_identity;
	ev.len = skb->len;
	ev.eth_proto = pkt->eth_proto;
	ev.proto = pkt->proto;
	ev.sport = pkt->sport;
	ev.dport = pkt->dport;
	addr6_copy(ev.saddr, pkt->saddr);
	addr6_copy(ev.daddr, pkt->daddr);
	__builtin_memcpy(ev.smac, pkt->smac, 6);
	__builtin_memcpy(ev.dmac, pkt->dmac, 6);
	cpy_events.perf_submit(skb, &ev, sizeof(ev));
	return TC_ACT_SHOT;
}

#endif /* CPY_DROP_H */
