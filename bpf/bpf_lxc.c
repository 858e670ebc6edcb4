/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Endpoint programs, attached with tc clsact (direct-action) to the HOST side
 * of every endpoint's veth:
 *
 *   from_container  tc ingress: what the container sends.
 *                   Validate the source (MAC, IP; ARP and IPv6 ND/MLD
 *                   included, lib/icmp6.h), track the connection, then either deliver
 *                   straight into a local destination container
 *                   (bpf_redirect_peer, bypassing the host stack) or hand
 *                   the packet to the host stack (TC_ACT_OK) for routing,
 *                   masquerading and everything else.
 *   to_container    tc egress: what the host stack sends to the container.
 *                   Track the connection and apply ingress policy.
 *
 * Policy (lib/policy.h) is checked for every packet in a connection's
 * original direction (conntrack CT_NEW and CT_ESTABLISHED), so that a revoked
 * allow stops established connections as soon as the agent rewrites the
 * maps: egress in from_container, ingress in to_container or, for direct
 * delivery, by the sender's from_container just before the redirect. Replies
 * and related ICMP errors pass on conntrack alone. A connection is only
 * redirected to an L7 proxy on its first packet; an established flow that a
 * new L7 rule covers is flushed from conntrack by the agent instead.
 * Identities of remote ends come from cpy_lxc (local endpoints) or the
 * ipcache (lib/ipcache.h), looked up afresh for every packet.
 *
 * Compiled once per agent start. Everything that differs per endpoint lives
 * in maps keyed by the host veth's ifindex or the endpoint's IP
 * (lib/endpoints.h), so attaching an endpoint is map writes and netlink.
 *
 * Services (lib/lb.h): from_container rewrites a packet for a frontend to
 * its backend before anything else looks at it; replies that conntrack
 * classifies as such get the frontend back as their source where they enter
 * the client.
 *
 * Build options (-D from the loader): CPY_PIN_ROOT, ENABLE_IPV4, ENABLE_IPV6,
 * CT_MAP_SIZE, ENDPOINT_MAP_SIZE, IPCACHE_MAP_SIZE, POLICY_MAP_SIZE,
 * CT_LIFETIME_*, CT_ACCOUNTING.
 *
 * bcc loads the programs with its default license string "GPL" (these sources
 * are dual licensed): bpf_perf_event_output, used for drop events, is only
 * available to GPL-compatible programs.
 */
#include "lib/common.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/ipv6.h"
#include "lib/l4.h"
#include "lib/endpoints.h"
#include "lib/forward.h"
#include "lib/ipcache.h"
#include "lib/metrics.h"
#include "lib/drop.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/icmp6.h"
#include "lib/proxy.h"
#include "lib/overlay.h"
#include "lib/lb.h"
#include "lib/trace.h"

struct arp_eth {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 sip[4];
	__u8 tha[6];
	__u8 tip[4];
} __attribute__((packed));

#define ARPHRD_ETHER_ 1
#define ETH_P_ARP_ 0x0806
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

static __always_inline int drop_from(struct __sk_buff *skb, const struct pkt_info *pkt,
				     __u8 reason, const struct ep_config *cfg)
{
	return send_drop(skb, pkt, reason, DIR_FROM_CONTAINER, cfg ? cfg->ep_id : 0, skb->ifindex,
			 cfg ? cfg->identity : 0, 0);
}

static __always_inline int drop_to(struct __sk_buff *skb, const struct pkt_info *pkt,
				   __u8 reason, const struct ep_config *cfg)
{
	return send_drop(skb, pkt, reason, DIR_TO_CONTAINER, cfg ? cfg->ep_id : 0, skb->ifindex, 0,
			 cfg ? cfg->identity : 0);
}

/* Parse the IP and transport headers of @pkt: 0, or why to drop it. */
static __always_inline int ip_parse(struct __sk_buff *skb, struct pkt_info *pkt, int ipv6)
{
	int ret = ipv6 ? ipv6_load(skb, pkt) : ipv4_load(skb, pkt);

	if (ret == IPV6_CHAIN_TOO_LONG)
		return DROP_EXTHDR_CHAIN;
	if (ret < 0)
		return DROP_INVALID_PACKET;
	ret = l4_load(skb, pkt);
	if (ret == L4_FRAG_NOT_FOUND)
		return DROP_FRAG_NOT_FOUND;
	return ret < 0 ? DROP_INVALID_PACKET : 0;
}

static __always_inline int to_stack(struct __sk_buff *skb)
{
	metric_count(METRIC_FROM_EP_TO_STACK, skb->len);
	return TC_ACT_OK;
}

/*
 * ARP from the container: the frame's and the sender's MAC must be its own,
 * the sender IP too (or 0.0.0.0 for address probes).
 */
static __always_inline int from_container_arp(struct __sk_buff *skb, const struct ep_config *cfg,
					      struct pkt_info *pkt)
{
	struct arp_eth buf;
	const struct arp_eth *arp = pkt_ptr(skb, ETH_HLEN_, sizeof(buf), &buf);
	__u32 sip, tip;

	if (!arp)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
	__builtin_memcpy(&sip, arp->sip, sizeof(sip));
	__builtin_memcpy(&tip, arp->tip, sizeof(tip));
	*(__u32 *)pkt->saddr = sip;
	*(__u32 *)pkt->daddr = tip;
	if (arp->hrd != cpy_htons(ARPHRD_ETHER_) || arp->pro != cpy_htons(ETH_P_IP_) ||
	    arp->hln != 6 || arp->pln != 4)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
	if (!mac_eq(pkt->smac, cfg->mac) || !mac_eq(arp->sha, cfg->mac))
		return drop_from(skb, pkt, DROP_INVALID_SMAC, cfg);
	if (sip != 0 && (!(cfg->flags & EP_F_HAS_IPV4) || !addr4_eq(pkt->saddr, cfg->ipv4)))
		return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	return to_stack(skb);
}

/*
 * The first packet of a connection that an L7 rule covers: assign it to the
 * proxy listening on @proxy_port and record the flow as redirected, so that
 * its later packets follow (lib/proxy.h). @ep_id and @ifindex name the
 * endpoint whose rules apply, @sid and @did the identities, for drop events.
 */
static __always_inline int redirect_to_proxy(struct __sk_buff *skb, const struct pkt_info *pkt,
					     int proxy_port, __u8 ct_dir, __u32 now, __u8 dir,
					     __u32 ep_id, __u32 ifindex, __u32 sid, __u32 did)
{
	int reason = proxy_assign(skb, pkt, proxy_port);

	if (reason)
		return send_drop(skb, pkt, reason, dir, ep_id, ifindex, sid, did);
	if (ct_create(skb, pkt, ct_dir, CT_F_PROXY_REDIRECT, sid, now) < 0)
		return send_drop(skb, pkt, DROP_CT_ERROR, dir, ep_id, ifindex, sid, did);
	return TC_ACT_OK;
}

/*
 * The destination is a local endpoint: deliver into its container directly.
 * The redirect skips the destination's to_container program, so its side of
 * conntrack and its ingress policy are handled here. When the sender's entry
 * already covers the destination's side (CT_F_LOCAL: one entry for both),
 * its ingress policy is still checked for every packet in the original
 * direction; only replies and related errors pass on conntrack alone.
 */
static __always_inline int deliver_local(struct __sk_buff *skb, const struct ep_config *src,
					 const struct pkt_info *pkt,
					 const struct endpoint_info *dst, int ct, __u32 now)
{
	int state = ct & CT_STATE_MASK;
	int in, verdict;

	if (ct & CT_COVERS_PEER)
		in = state == CT_ESTABLISHED ? CT_ESTABLISHED : CT_REPLY;
	else if (state == CT_RELATED)
		in = CT_RELATED;
	else
		in = ct_lookup_ingress(skb, pkt, now);
	if (in & CT_TO_PROXY)
		return proxy_deliver(skb);
	if (in == CT_MISSING_SYN)
		return send_drop(skb, pkt, DROP_CT_MISSING_SYN, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, src->identity, dst->identity);
	if (in == CT_NEW || in == CT_ESTABLISHED) {
		verdict = policy_check(dst->ep_id, dst->flags, src->identity, pkt, POLICY_INGRESS);
		trace_policy_verdict(skb, pkt, verdict, in == CT_NEW, POLICY_INGRESS, dst->ep_id,
				     dst->flags, dst->ifindex, src->identity, dst->identity);
		if (verdict < 0)
			return send_drop(skb, pkt, DROP_POLICY_DENIED, DIR_TO_CONTAINER, dst->ep_id,
					 dst->ifindex, src->identity, dst->identity);
		if (in == CT_NEW) {
			/* The destination's L7 rules: into the proxy, from here. */
			if (verdict > 0)
				return redirect_to_proxy(skb, pkt, verdict,
							 state == CT_NEW ? CT_EGRESS : CT_INGRESS,
							 now, DIR_TO_CONTAINER, dst->ep_id,
							 dst->ifindex, src->identity, dst->identity);
			/* A new connection gets one entry for both sides, below. */
			if (state != CT_NEW &&
			    ct_create(skb, pkt, CT_INGRESS, 0, src->identity, now) < 0)
				return drop_from(skb, pkt, DROP_CT_ERROR, src);
		}
	}
	if (state == CT_NEW &&
	    ct_create(skb, pkt, CT_EGRESS, CT_F_LOCAL, src->identity, now) < 0)
		return drop_from(skb, pkt, DROP_CT_ERROR, src);

	if (fwd_rewrite(skb, pkt, dst->node_mac, dst->mac) < 0)
		return drop_from(skb, pkt, DROP_WRITE_ERROR, src);

	metric_count(METRIC_FROM_EP_LOCAL, skb->len);
	return bpf_redirect_peer(dst->ifindex, 0);
}

/*
 * Common tail of both families once the source is known to be genuine:
 * conntrack, egress policy for new connections (the destination's identity
 * comes from cpy_lxc for a local endpoint, else from the ipcache), then
 * direct delivery or the host stack.
 */
static __always_inline int from_container_l4(struct __sk_buff *skb, const struct ep_config *cfg,
					     struct pkt_info *pkt)
{
	__u32 now = ct_now();
	/* A packet for a service frontend goes to its backend from here on (lib/lb.h). */
	int ct, state, lb = lb_from_container(skb, pkt, now);
	struct endpoint_info *dst;

	if (lb < 0)
		return drop_from(skb, pkt, -lb, cfg);
	dst = lookup_endpoint(pkt);
	ct = ct_lookup_egress(skb, pkt, dst != 0, now);
	state = ct & CT_STATE_MASK;
	if (state == CT_UNRELATED)
		return drop_from(skb, pkt, DROP_ICMP_UNRELATED, cfg);
	if (state == CT_REPLY && (lb = lb_rev_nat(skb, pkt)) < 0)
		return drop_from(skb, pkt, -lb, cfg);
	if (state == CT_MISSING_SYN)
		return drop_from(skb, pkt, DROP_CT_MISSING_SYN, cfg);
	/* Every packet in the original direction, redirected flows included. */
	if ((state == CT_NEW || state == CT_ESTABLISHED) && (cfg->flags & EP_F_EGRESS_ENFORCED)) {
		__u32 remote = dst ? dst->identity : ipcache_identity(pkt->family, pkt->daddr);
		int verdict = policy_check(cfg->ep_id, cfg->flags, remote, pkt, POLICY_EGRESS);

		trace_policy_verdict(skb, pkt, verdict, state == CT_NEW, POLICY_EGRESS, cfg->ep_id,
				     cfg->flags, skb->ifindex, remote, cfg->identity);
		if (verdict < 0)
			return send_drop(skb, pkt, DROP_POLICY_DENIED, DIR_FROM_CONTAINER, cfg->ep_id,
					 skb->ifindex, cfg->identity, remote);
		if (verdict > 0 && state == CT_NEW)
			return redirect_to_proxy(skb, pkt, verdict, CT_EGRESS, now,
						 DIR_FROM_CONTAINER, cfg->ep_id, skb->ifindex,
						 cfg->identity, remote);
	}
	/* A redirected flow, or a reply to a connection the proxy opened. */
	if (ct & CT_TO_PROXY)
		return proxy_deliver(skb);

	/*
	 * Expiring packets take the slow path: the host stack sends time exceeded.
	 * So do replies of connections that came through the stack (a hostPort
	 * DNAT from another local endpoint): only the stack can undo its NAT.
	 */
	if (dst && pkt->ttl > 1 && !(ct & CT_VIA_STACK))
		return deliver_local(skb, cfg, pkt, dst, ct, now);
	if (state == CT_NEW && ct_create(skb, pkt, CT_EGRESS, 0, cfg->identity, now) < 0)
		return drop_from(skb, pkt, DROP_CT_ERROR, cfg);
	if (pkt->ttl > 1) {
		int ret = overlay_send(skb, pkt, cfg->identity);

		if (ret == -2)
			return drop_from(skb, pkt, DROP_WRITE_ERROR, cfg);
		if (ret >= 0)
			return ret;
	}
	return to_stack(skb);
}

#ifdef ENABLE_IPV4
static __always_inline int from_container_ipv4(struct __sk_buff *skb,
					       const struct ep_config *cfg,
					       struct pkt_info *pkt)
{
	/* Parse everything first so that a drop event carries addresses and ports. */
	int reason = ip_parse(skb, pkt, 0);

	if (reason)
		return drop_from(skb, pkt, reason, cfg);
	if (!mac_eq(pkt->smac, cfg->mac))
		return drop_from(skb, pkt, DROP_INVALID_SMAC, cfg);
	if (!(cfg->flags & EP_F_HAS_IPV4) || !addr4_eq(pkt->saddr, cfg->ipv4))
		return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	return from_container_l4(skb, cfg, pkt);
}
#endif

/*
 * Compiled even without ENABLE_IPV6: a container's kernel speaks IPv6 on its
 * link anyway (neighbour discovery, MLD from its link-local address). That is
 * let through to the node, only other IPv6 is dropped (DROP_FAMILY_DISABLED).
 */
static __always_inline int from_container_ipv6(struct __sk_buff *skb,
					       const struct ep_config *cfg,
					       struct pkt_info *pkt)
{
	int nd, own, reason = ip_parse(skb, pkt, 1);

	if (reason)
		return drop_from(skb, pkt, reason, cfg);
	if (!mac_eq(pkt->smac, cfg->mac))
		return drop_from(skb, pkt, DROP_INVALID_SMAC, cfg);
	nd = pkt->proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt->icmp_type);
#ifndef ENABLE_IPV6
	if (!nd)
		return drop_from(skb, pkt, DROP_FAMILY_DISABLED, cfg);
#endif
	own = (cfg->flags & EP_F_HAS_IPV6) && addr6_eq(pkt->saddr, cfg->ipv6);
	if (!own) {
		/* Neighbour discovery and MLD legitimately use link-local or :: sources. */
		if (!nd || !(addr6_eq(pkt->saddr, cfg->ipv6_ll) ||
			     ipv6_is_unspecified(pkt->saddr)))
			return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	}
	if (nd) {
		reason = nd_validate(skb, cfg, pkt);
		if (reason)
			return drop_from(skb, pkt, reason, cfg);
		/* ND/MLD for the node: not tracked, never delivered (lib/icmp6.h). */
		if (nd_for_node(pkt))
			return to_stack(skb);
		/* Anywhere else it is ordinary traffic, from an ordinary source. */
		if (!own)
			return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	}
#ifdef ENABLE_IPV6
	return from_container_l4(skb, cfg, pkt);
#else
	return drop_from(skb, pkt, DROP_FAMILY_DISABLED, cfg);
#endif
}

int from_container(struct __sk_buff *skb)
{
	struct pkt_info pkt = {};
	struct ep_config *cfg;
	int ret;

	if (eth_load(skb, &pkt) < 0)
		return drop_from(skb, &pkt, DROP_INVALID_PACKET, 0);
	cfg = lookup_ep_config(skb->ifindex);
	if (!cfg)	/* fail closed: a device we do not know is not trusted */
		return drop_from(skb, &pkt, DROP_UNKNOWN_ENDPOINT, 0);

	/* Each handler parses its headers, then validates the source MAC and IP. */
	switch (pkt.eth_proto) {
	case ETH_P_ARP_:
		ret = from_container_arp(skb, cfg, &pkt);
		break;
#ifdef ENABLE_IPV4
	case ETH_P_IP_:
		ret = from_container_ipv4(skb, cfg, &pkt);
		break;
#else
	case ETH_P_IP_:
		ip_parse(skb, &pkt, 0);	/* for the drop event's addresses */
		return drop_from(skb, &pkt, DROP_FAMILY_DISABLED, cfg);
#endif
	case ETH_P_IPV6_:
		ret = from_container_ipv6(skb, cfg, &pkt);
		break;
	default:
		return drop_from(skb, &pkt, DROP_UNSUPPORTED_L3, cfg);
	}
	return trace_forward(skb, &pkt, cfg, TRACE_PROG_FROM_CONTAINER, ret);
}

/*
 * The sender of a packet the host stack hands to a container: the node
 * itself when the packet was generated there (it never arrived on any
 * device, so its ingress ifindex is 0), otherwise whatever the ipcache says
 * about its source address (world when nothing). A packet that did arrive
 * on a device but carries one of the node's own addresses was masqueraded on
 * its way (from a container of another network, such as Docker's bridge) or
 * spoofed: whoever sent it, it was not the host, so it counts as world.
 */
static __always_inline __u32 source_identity(const struct __sk_buff *skb,
					     const struct pkt_info *pkt)
{
	__u32 id;

	if (skb->ingress_ifindex == 0)
		return IDENTITY_HOST;
	id = ipcache_identity(pkt->family, pkt->saddr);
	return id == IDENTITY_HOST ? IDENTITY_WORLD : id;
}

/* Traffic the host stack routed to the container: track it, apply ingress policy. */
static __always_inline int to_container_ip(struct __sk_buff *skb, const struct ep_config *cfg,
					   struct pkt_info *pkt)
{
	__u32 now = ct_now();
	int lb, ct = ct_lookup_ingress(skb, pkt, now);

	if (ct == CT_UNRELATED)
		return drop_to(skb, pkt, DROP_ICMP_UNRELATED, cfg);
	if (ct == CT_REPLY && (lb = lb_rev_nat(skb, pkt)) < 0)
		return drop_to(skb, pkt, -lb, cfg);
	if (ct == CT_MISSING_SYN)
		return drop_to(skb, pkt, DROP_CT_MISSING_SYN, cfg);
	/* Redirected at ingress after the host stack routed it: no hairpin (yet). */
	if (ct & CT_TO_PROXY)
		return drop_to(skb, pkt, DROP_PROXY_UNAVAILABLE, cfg);
	/* Every packet in the original direction; replies and related pass. */
	if (ct == CT_NEW || ct == CT_ESTABLISHED) {
		/*
		 * A proxy's upstream connection leaves from its client's address: the
		 * client's identity, not the host's, and no second redirect after the
		 * ingress proxy enforced this endpoint's rules.
		 */
		int proxied = from_proxy(skb);
		__u32 remote = proxied ? ipcache_identity(pkt->family, pkt->saddr) :
					 source_identity(skb, pkt);
		int verdict = policy_check(cfg->ep_id, cfg->flags, remote, pkt, POLICY_INGRESS);

		trace_policy_verdict(skb, pkt, verdict, ct == CT_NEW, POLICY_INGRESS, cfg->ep_id,
				     cfg->flags, skb->ifindex, remote, cfg->identity);
		if (verdict < 0)
			return send_drop(skb, pkt, DROP_POLICY_DENIED, DIR_TO_CONTAINER, cfg->ep_id,
					 skb->ifindex, remote, cfg->identity);
		if (verdict > 0 && !proxy_mark_is(skb, MARK_FROM_PROXY_INGRESS))
			return send_drop(skb, pkt, DROP_PROXY_UNAVAILABLE, DIR_TO_CONTAINER,
					 cfg->ep_id, skb->ifindex, remote, cfg->identity);
		/*
		 * From a local endpoint, yet routed by the stack instead of delivered
		 * directly: the node rewrote it (hostPort DNAT). Its replies go back
		 * the same way (CT_F_VIA_STACK), so that the stack's reverse NAT runs.
		 */
		__u16 flags = proxied ? CT_F_FROM_PROXY :
			      (skb->ingress_ifindex && lookup_ep_config(skb->ingress_ifindex)) ?
			      CT_F_VIA_STACK : 0;

		if (ct == CT_NEW && ct_create(skb, pkt, CT_INGRESS, flags, remote, now) < 0)
			return drop_to(skb, pkt, DROP_CT_ERROR, cfg);
	}
	metric_count(METRIC_TO_EP_FROM_STACK, skb->len);
	return TC_ACT_OK;
}

int to_container(struct __sk_buff *skb)
{
	struct pkt_info pkt = {};
	struct ep_config *cfg;
	int reason;

	if (eth_load(skb, &pkt) < 0)
		return drop_to(skb, &pkt, DROP_INVALID_PACKET, 0);
	cfg = lookup_ep_config(skb->ifindex);
	if (!cfg)
		return drop_to(skb, &pkt, DROP_UNKNOWN_ENDPOINT, 0);

	switch (pkt.eth_proto) {
#ifdef ENABLE_IPV4
	case ETH_P_IP_:
		reason = ip_parse(skb, &pkt, 0);
		if (reason)
			return drop_to(skb, &pkt, reason, cfg);
		return trace_forward(skb, &pkt, cfg, TRACE_PROG_TO_CONTAINER,
				     to_container_ip(skb, cfg, &pkt));
#endif
#ifdef ENABLE_IPV6
	case ETH_P_IPV6_:
		reason = ip_parse(skb, &pkt, 1);
		if (reason)
			return drop_to(skb, &pkt, reason, cfg);
		/*
		 * The node's own ND/MLD (never arrived on a device) is not tracked;
		 * ND the node forwards from elsewhere is ordinary traffic.
		 */
		if (pkt.proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt.icmp_type) &&
		    skb->ingress_ifindex == 0)
			return TC_ACT_OK;
		return trace_forward(skb, &pkt, cfg, TRACE_PROG_TO_CONTAINER,
				     to_container_ip(skb, cfg, &pkt));
#else
	case ETH_P_IPV6_:
		/*
		 * IPv6 is off: only the node's own ND/MLD on the link, which the
		 * container's kernel speaks anyway; nothing else of IPv6 enters.
		 */
		reason = ip_parse(skb, &pkt, 1);
		if (!reason && pkt.proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt.icmp_type) &&
		    skb->ingress_ifindex == 0)
			return TC_ACT_OK;
		return drop_to(skb, &pkt, DROP_FAMILY_DISABLED, cfg);
#endif
#ifndef ENABLE_IPV4
	case ETH_P_IP_:
		ip_parse(skb, &pkt, 0);	/* for the drop event's addresses */
		return drop_to(skb, &pkt, DROP_FAMILY_DISABLED, cfg);
#endif
	default:
		/* ARP and anything else from the node itself. */
		return TC_ACT_OK;
	}
}

/*
 * tc ingress of the VXLAN device: traffic from endpoints on other nodes, with
 * the sender's identity as the tunnel id (lib/overlay.h). Delivered straight
 * into the destination container after its conntrack and ingress policy, like
 * direct delivery between local endpoints; what is not for a local endpoint
 * goes to the host stack.
 */
static __always_inline int from_overlay_ip(struct __sk_buff *skb, struct pkt_info *pkt)
{
	struct endpoint_info *dst = lookup_endpoint(pkt);
	__u32 remote, now;
	int ct, verdict = 0;

	if (!dst)
		return TC_ACT_OK;
	remote = overlay_source_identity(skb);
	if (!remote)
		return send_drop(skb, pkt, DROP_INVALID_PACKET, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, 0, dst->identity);
	now = ct_now();
	ct = ct_lookup_ingress(skb, pkt, now);
	if (ct == CT_UNRELATED)
		return send_drop(skb, pkt, DROP_ICMP_UNRELATED, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, remote, dst->identity);
	if (ct == CT_MISSING_SYN)
		return send_drop(skb, pkt, DROP_CT_MISSING_SYN, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, remote, dst->identity);
	if (ct & CT_TO_PROXY)
		return proxy_deliver(skb);
	if (ct == CT_REPLY && lb_rev_nat(skb, pkt) < 0)
		return send_drop(skb, pkt, DROP_WRITE_ERROR, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, remote, dst->identity);
	/* Every packet in the original direction; replies and related pass. */
	if (ct == CT_NEW || ct == CT_ESTABLISHED) {
		verdict = policy_check(dst->ep_id, dst->flags, remote, pkt, POLICY_INGRESS);
		trace_policy_verdict(skb, pkt, verdict, ct == CT_NEW, POLICY_INGRESS, dst->ep_id,
				     dst->flags, dst->ifindex, remote, dst->identity);
		if (verdict < 0)
			return send_drop(skb, pkt, DROP_POLICY_DENIED, DIR_TO_CONTAINER, dst->ep_id,
					 dst->ifindex, remote, dst->identity);
	}
	if (ct == CT_NEW) {
		if (verdict > 0)
			return redirect_to_proxy(skb, pkt, verdict, CT_INGRESS, now,
						 DIR_TO_CONTAINER, dst->ep_id, dst->ifindex,
						 remote, dst->identity);
		if (ct_create(skb, pkt, CT_INGRESS, 0, remote, now) < 0)
			return send_drop(skb, pkt, DROP_CT_ERROR, DIR_TO_CONTAINER, dst->ep_id,
					 dst->ifindex, remote, dst->identity);
	}
	if (pkt->ttl <= 1)
		return TC_ACT_OK;	/* the host stack sends time exceeded */
	if (fwd_rewrite(skb, pkt, dst->node_mac, dst->mac) < 0)
		return send_drop(skb, pkt, DROP_WRITE_ERROR, DIR_TO_CONTAINER, dst->ep_id,
				 dst->ifindex, remote, dst->identity);
	metric_count(METRIC_FROM_OVERLAY, skb->len);
	return bpf_redirect_peer(dst->ifindex, 0);
}

int from_overlay(struct __sk_buff *skb)
{
	struct pkt_info pkt = {};
	int reason;

	if (eth_load(skb, &pkt) < 0)
		return TC_ACT_OK;
	switch (pkt.eth_proto) {
#ifdef ENABLE_IPV4
	case ETH_P_IP_:
		reason = ip_parse(skb, &pkt, 0);
		if (reason)
			return send_drop(skb, &pkt, reason, DIR_TO_CONTAINER, 0, skb->ifindex, 0, 0);
		return trace_forward(skb, &pkt, 0, TRACE_PROG_FROM_OVERLAY,
				     from_overlay_ip(skb, &pkt));
#endif
#ifdef ENABLE_IPV6
	case ETH_P_IPV6_:
		reason = ip_parse(skb, &pkt, 1);
		if (reason)
			return send_drop(skb, &pkt, reason, DIR_TO_CONTAINER, 0, skb->ifindex, 0, 0);
		if (pkt.proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt.icmp_type))
			return TC_ACT_OK;
		return trace_forward(skb, &pkt, 0, TRACE_PROG_FROM_OVERLAY,
				     from_overlay_ip(skb, &pkt));
#endif
	default:
		return TC_ACT_OK;
	}
}
