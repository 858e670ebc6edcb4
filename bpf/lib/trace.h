/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Trace and policy-verdict events for `cilium-py monitor`, off unless a reader
 * wants them.
 *
 *   trace           one event per forwarded packet: which program saw it, where
 *                   it went (observation point), endpoint and identities.
 *   policy-verdict  one event per new connection and direction (and for a
 *                   packet of an established one that policy now denies):
 *                   allowed, denied or redirected to a proxy,
 *                   with the policy entry that matched (its identity, port and
 *                   protocol, each possibly "any").
 *
 * Why a gate: a perf event per packet costs far more than the datapath
 * itself. cpy_trace_cfg (one array slot, not pinned: it belongs to the agent
 * process that reads the events) holds TRACE_F_* bits that the agent sets
 * from the monitor readers' filters (plugin/agent/monitor.py,
 * EventHub.on_wanted_change). With no reader of these types the whole cost
 * is one inlined array lookup; everything else (identity lookups, the match
 * explanation, the event) happens only when the bit is set.
 *
 * Events share the drops' perf array (cpy_events, lib/drop.h) and its first
 * byte (the type); the structs are built in a per-CPU scratch slot, so they
 * cost no stack. The agent decodes them in plugin/datapath/trace_events.py.
 */
#ifndef CPY_TRACE_H
#define CPY_TRACE_H

#include "lib/common.h"
#include "lib/drop.h"
#include "lib/endpoints.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/proxy.h"
#include "lib/overlay.h"

#define EVENT_TRACE 2
#define EVENT_POLICY_VERDICT 3

#define TRACE_F_TRACE 0x1
#define TRACE_F_POLICY_VERDICT 0x2

/* Observation points: where a forwarded packet went. */
#define TRACE_TO_STACK 1	/* handed to the node's stack (routing, masquerade) */
#define TRACE_TO_ENDPOINT 2	/* into a local container */
#define TRACE_TO_PROXY 3	/* to an L7 proxy's socket */
#define TRACE_TO_OVERLAY 4	/* into the tunnel to another node */

/* The program that saw the packet. */
#define TRACE_PROG_FROM_CONTAINER 0
#define TRACE_PROG_TO_CONTAINER 1
#define TRACE_PROG_FROM_OVERLAY 2

#define VERDICT_ALLOWED 1
#define VERDICT_DENIED 2
#define VERDICT_REDIRECTED 3

struct trace_event {
	__u8 type;		/* EVENT_TRACE / EVENT_POLICY_VERDICT */
	__u8 code;		/* TRACE_TO_* / VERDICT_* */
	__u8 prog;		/* TRACE_PROG_* */
	__u8 family;		/* 0, CPY_AF_INET, CPY_AF_INET6 */
	__u32 ep_id;		/* the endpoint the event is about */
	__u32 ifindex;		/* its host veth */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 len;		/* bytes on the wire */
	__u16 eth_proto;
	__u8 proto;
	__u8 tcp_flags;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	/* policy-verdict only */
	__u32 match_identity;	/* identity of the matching entry, 0: any */
	__be16 match_dport;	/* its port, 0: any */
	__u8 match_proto;	/* its protocol, 0: any */
	__u8 match_shape;	/* POLICY_SHAPE_* of the entry, 0: no entry */
	__u16 proxy_port;	/* redirected: the proxy's port */
	__u8 direction;		/* POLICY_EGRESS / POLICY_INGRESS */
	__u8 pad;
};

BPF_ARRAY(cpy_trace_cfg, __u32, 1);
BPF_PERCPU_ARRAY(cpy_trace_buf, struct trace_event, 1);

static __always_inline int trace_on(__u32 bit)
{
	__u32 zero = 0;
	__u32 *flags = cpy_trace_cfg.lookup(&zero);

	return flags && (*flags & bit);
}

static __always_inline struct trace_event *trace_fill(const struct __sk_buff *skb,
						      const struct pkt_info *pkt, __u8 type,
						      __u8 code, __u8 prog, __u32 ep_id,
						      __u32 ifindex, __u32 sid, __u32 did)
{
	__u32 zero = 0;
	struct trace_event *ev = cpy_trace_buf.lookup(&zero);

	if (!ev)
		return 0;
	ev->type = type;
	ev->code = code;
	ev->prog = prog;
	ev->family = pkt->family;
	ev->ep_id = ep_id;
	ev->ifindex = ifindex;
	ev->src_identity = sid;
	ev->dst_identity = did;
	ev->len = skb->len;
	ev->eth_proto = pkt->eth_proto;
	ev->proto = pkt->proto;
	ev->tcp_flags = pkt->tcp_flags;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	addr6_copy(ev->saddr, pkt->saddr);
	addr6_copy(ev->daddr, pkt->daddr);
	ev->match_identity = 0;
	ev->match_dport = 0;
	ev->match_proto = 0;
	ev->match_shape = 0;
	ev->proxy_port = 0;
	ev->direction = 0;
	return ev;
}

static __always_inline __u32 trace_identity(const struct pkt_info *pkt, int dst)
{
	if (pkt->family != CPY_AF_INET && pkt->family != CPY_AF_INET6)
		return 0;
	return ipcache_identity(pkt->family, dst ? pkt->daddr : pkt->saddr);
}

/*
 * The end of a program: report where the packet went unless it was dropped
 * (drops have their own events). @ret is the program's verdict, returned
 * unchanged. @cfg is the endpoint of the veth the program runs on (0 for
 * from_overlay, which names the destination endpoint instead).
 */
static __always_inline int trace_forward(struct __sk_buff *skb, const struct pkt_info *pkt,
					 const struct ep_config *cfg, __u8 prog, int ret)
{
	struct endpoint_info *dst;
	struct trace_event *ev;
	__u32 sid, did, ep_id = 0, ifindex = skb->ifindex;
	__u8 code;

	if (ret == TC_ACT_SHOT || !trace_on(TRACE_F_TRACE))
		return ret;
	dst = pkt->family ? lookup_endpoint(pkt) : 0;
	if (proxy_mark_is(skb, MARK_TO_PROXY))
		code = TRACE_TO_PROXY;
	else if (prog == TRACE_PROG_TO_CONTAINER || ret == TC_ACT_REDIRECT)
		code = (dst || prog != TRACE_PROG_FROM_CONTAINER) ? TRACE_TO_ENDPOINT :
								     TRACE_TO_OVERLAY;
	else
		code = TRACE_TO_STACK;
	if (prog == TRACE_PROG_FROM_CONTAINER) {
		sid = cfg ? cfg->identity : 0;
		did = dst ? dst->identity : trace_identity(pkt, 1);
	} else if (prog == TRACE_PROG_TO_CONTAINER) {
		sid = trace_identity(pkt, 0);
		did = cfg ? cfg->identity : 0;
	} else {
		sid = overlay_source_identity(skb);
		did = dst ? dst->identity : trace_identity(pkt, 1);
	}
	if (cfg) {
		ep_id = cfg->ep_id;
	} else if (dst) {
		ep_id = dst->ep_id;
		ifindex = dst->ifindex;
	}
	ev = trace_fill(skb, pkt, EVENT_TRACE, code, prog, ep_id, ifindex, sid, did);
	if (ev)
		cpy_events.perf_submit(skb, ev, sizeof(*ev));
	return ret;
}

static __always_inline int trace_match(struct policy_key *key, struct trace_event *ev,
				       __u32 shapes, __u8 shape, __u32 identity, __be16 dport,
				       __u8 proto)
{
	if (!(shapes & shape) || !policy_try(key, identity, dport, proto))
		return 0;
	ev->match_identity = identity;
	ev->match_dport = dport;
	ev->match_proto = proto;
	ev->match_shape = shape;
	return 1;
}

/*
 * A policy decision (policy_check's result @verdict) for a packet at endpoint
 * @ep_id in @dir with @remote at the other end; @new_conn: its connection's
 * first packet. Which entry matched
 * is found by asking the policy map again in policy_check's order, only when
 * someone listens; the verdict itself is policy_check's.
 */
static __always_inline void trace_policy_verdict(struct __sk_buff *skb,
						 const struct pkt_info *pkt, int verdict,
						 int new_conn, __u8 dir, __u32 ep_id, __u32 ep_flags,
						 __u32 ifindex, __u32 remote, __u32 self_identity)
{
	struct policy_key key = {};
	struct trace_event *ev;
	__u32 shapes;
	__u8 code, prog;
	int ports;

	/*
	 * Policy is checked for every packet in the original direction: report the
	 * first packet of a connection, and later ones only when they are denied
	 * (a revoked allow), not one event per packet.
	 */
	if ((!new_conn && verdict >= 0) || !trace_on(TRACE_F_POLICY_VERDICT))
		return;
	/* Not enforced in this direction: no decision was taken. */
	if (!(ep_flags & (dir == POLICY_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED)))
		return;
	code = verdict < 0 ? VERDICT_DENIED : verdict > 0 ? VERDICT_REDIRECTED : VERDICT_ALLOWED;
	prog = dir == POLICY_INGRESS ? TRACE_PROG_TO_CONTAINER : TRACE_PROG_FROM_CONTAINER;
	ev = trace_fill(skb, pkt, EVENT_POLICY_VERDICT, code, prog, ep_id, ifindex,
			dir == POLICY_INGRESS ? remote : self_identity,
			dir == POLICY_INGRESS ? self_identity : remote);
	if (!ev)
		return;
	ev->direction = dir;
	ev->proxy_port = verdict > 0 ? verdict : 0;
	shapes = (ep_flags >> (dir == POLICY_INGRESS ? EP_SHAPES_INGRESS_SHIFT :
						      EP_SHAPES_EGRESS_SHIFT)) & POLICY_SHAPES_MASK;
	key.ep_id = ep_id;
	key.direction = dir;
	ports = pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP;
	if (!(ports && trace_match(&key, ev, shapes, POLICY_SHAPE_ID_PORT_PROTO, remote,
				   pkt->dport, pkt->proto)) &&
	    !(ports && trace_match(&key, ev, shapes, POLICY_SHAPE_ID_PORT, remote, pkt->dport, 0)) &&
	    !trace_match(&key, ev, shapes, POLICY_SHAPE_ID, remote, 0, 0) &&
	    !(ports && trace_match(&key, ev, shapes, POLICY_SHAPE_PORT_PROTO, 0, pkt->dport,
				   pkt->proto)) &&
	    !(ports && trace_match(&key, ev, shapes, POLICY_SHAPE_PORT, 0, pkt->dport, 0)))
		trace_match(&key, ev, shapes, POLICY_SHAPE_ANY, 0, 0, 0);
	cpy_events.perf_submit(skb, ev, sizeof(*ev));
}

#endif /* CPY_TRACE_H */
