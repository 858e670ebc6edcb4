/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Endpoint programs, attached with tc clsact (direct-action) to the HOST side
 * of every endpoint's veth:
 *
 *   from_container  tc ingress: what the container sends.
 *                   Validate the source (MAC, IP; ARP and IPv6 ND/MLD
 *                   included), track the connection, then either deliver
 *                   straight into a local destination container
 *                   (bpf_redirect_peer, bypassing the host stack) or hand
 *                   the packet to the host stack (TC_ACT_OK) for routing,
 *                   masquerading and everything else.
 *   to_container    tc egress: what the host stack sends to the container.
 *                   Track the connection and apply ingress policy.
 *
 * Compiled once per agent start. Everything that differs per endpoint lives
 * in maps keyed by the host veth's ifindex or the endpoint's IP
 * (lib/endpoints.h), so attaching an endpoint is map writes and netlink.
 *
 * Build options (-D from the loader): CPY_PIN_ROOT, ENABLE_IPV4, ENABLE_IPV6,
 * CT_MAP_SIZE, ENDPOINT_MAP_SIZE, CT_LIFETIME_*.
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
#include "lib/metrics.h"
#include "lib/drop.h"
#include "lib/conntrack.h"
#include "lib/policy.h"

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
	return send_drop(skb, pkt, reason, DIR_FROM_CONTAINER, cfg ? cfg->ep_id : 0,
			 cfg ? cfg->identity : 0, 0);
}

static __always_inline int drop_to(struct __sk_buff *skb, const struct pkt_info *pkt,
				   __u8 reason, const struct ep_config *cfg)
{
	return send_drop(skb, pkt, reason, DIR_TO_CONTAINER, cfg ? cfg->ep_id : 0, 0,
			 cfg ? cfg->identity : 0);
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
	struct arp_eth arp;
	__u32 sip, tip;

	if (bpf_skb_load_bytes(skb, ETH_HLEN_, &arp, sizeof(arp)) < 0)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
	__builtin_memcpy(&sip, arp.sip, sizeof(sip));
	__builtin_memcpy(&tip, arp.tip, sizeof(tip));
	*(__u32 *)pkt->saddr = sip;
	*(__u32 *)pkt->daddr = tip;
	if (arp.hrd != cpy_htons(ARPHRD_ETHER_) || arp.pro != cpy_htons(ETH_P_IP_) ||
	    arp.hln != 6 || arp.pln != 4)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
	if (!mac_eq(pkt->smac, cfg->mac) || !mac_eq(arp.sha, cfg->mac))
		return drop_from(skb, pkt, DROP_INVALID_SMAC, cfg);
	if (sip != 0 && (!(cfg->flags & EP_F_HAS_IPV4) || !addr4_eq(pkt->saddr, cfg->ipv4)))
		return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	return to_stack(skb);
}

/*
 * The destination is a local endpoint: deliver into its container directly.
 * This is the one place where the destination's ingress policy is enforced
 * for local traffic, because the redirect skips its to_container program.
 */
static __always_inline int deliver_local(struct __sk_buff *skb, const struct ep_config *src,
					 const struct pkt_info *pkt,
					 const struct endpoint_info *dst)
{
	int ct, verdict;

	/* Expiring packets take the slow path: the host stack sends time exceeded. */
	if (pkt->ttl <= 1)
		return to_stack(skb);

	if (pkt->family == CPY_AF_INET)
		ct = ct_lookup4(skb, pkt, CT_INGRESS, src->identity);
	else
		ct = ct_lookup6(skb, pkt, CT_INGRESS, src->identity);
	if (ct < 0)
		return send_drop(skb, pkt, DROP_CT_ERROR, DIR_FROM_CONTAINER, src->ep_id,
				 src->identity, dst->identity);

	verdict = policy_can_ingress(dst->ep_id, dst->identity, src->identity, pkt, ct);
	if (verdict < 0)
		return send_drop(skb, pkt, DROP_POLICY_DENIED, DIR_FROM_CONTAINER, src->ep_id,
				 src->identity, dst->identity);

	if (pkt->family == CPY_AF_INET) {
		if (ipv4_dec_ttl(skb) < 0)
			return drop_from(skb, pkt, DROP_WRITE_ERROR, src);
	} else {
		if (ipv6_dec_hoplimit(skb, pkt->ttl) < 0)
			return drop_from(skb, pkt, DROP_WRITE_ERROR, src);
	}
	if (eth_rewrite(skb, dst->node_mac, dst->mac) < 0)
		return drop_from(skb, pkt, DROP_WRITE_ERROR, src);

	metric_count(METRIC_FROM_EP_LOCAL, skb->len);
	return bpf_redirect_peer(dst->ifindex, 0);
}

/* Common tail of both families once the source is known to be genuine. */
static __always_inline int from_container_l4(struct __sk_buff *skb, const struct ep_config *cfg,
					     const struct pkt_info *pkt)
{
	struct endpoint_info *dst;
	int ct;

	if (pkt->family == CPY_AF_INET)
		ct = ct_lookup4(skb, pkt, CT_EGRESS, cfg->identity);
	else
		ct = ct_lookup6(skb, pkt, CT_EGRESS, cfg->identity);
	if (ct < 0)
		return drop_from(skb, pkt, DROP_CT_ERROR, cfg);

	if (policy_can_egress(cfg->ep_id, cfg->identity, pkt, ct) < 0)
		return drop_from(skb, pkt, DROP_POLICY_DENIED, cfg);

	dst = lookup_endpoint(pkt);
	if (dst)
		return deliver_local(skb, cfg, pkt, dst);
	return to_stack(skb);
}

#ifdef ENABLE_IPV4
static __always_inline int from_container_ipv4(struct __sk_buff *skb,
					       const struct ep_config *cfg,
					       struct pkt_info *pkt)
{
	/* Parse everything first so that a drop event carries addresses and ports. */
	if (ipv4_load(skb, pkt) < 0 || l4_load(skb, pkt) < 0)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
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
 * let through, only other IPv6 is dropped as unsupported, which keeps the drop
 * counters and events for real problems.
 */
static __always_inline int from_container_ipv6(struct __sk_buff *skb,
					       const struct ep_config *cfg,
					       struct pkt_info *pkt)
{
	int nd, own;

	if (ipv6_load(skb, pkt) < 0 || l4_load(skb, pkt) < 0)
		return drop_from(skb, pkt, DROP_INVALID_PACKET, cfg);
	if (!mac_eq(pkt->smac, cfg->mac))
		return drop_from(skb, pkt, DROP_INVALID_SMAC, cfg);
	nd = pkt->proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt->icmp_type);
	own = (cfg->flags & EP_F_HAS_IPV6) && addr6_eq(pkt->saddr, cfg->ipv6);
	if (!own) {
		/* Neighbour discovery and MLD legitimately use link-local or :: sources. */
		if (!nd || !(addr6_eq(pkt->saddr, cfg->ipv6_ll) ||
			     ipv6_is_unspecified(pkt->saddr)))
			return drop_from(skb, pkt, DROP_INVALID_SIP, cfg);
	}
	/* ND/MLD concern the link to the node only: not tracked, never delivered. */
	if (nd)
		return to_stack(skb);
#ifdef ENABLE_IPV6
	return from_container_l4(skb, cfg, pkt);
#else
	return drop_from(skb, pkt, DROP_UNSUPPORTED_L3, cfg);
#endif
}

int from_container(struct __sk_buff *skb)
{
	struct pkt_info pkt = {};
	struct ep_config *cfg;

	if (eth_load(skb, &pkt) < 0)
		return drop_from(skb, &pkt, DROP_INVALID_PACKET, 0);
	cfg = lookup_ep_config(skb->ifindex);
	if (!cfg)	/* fail closed: a device we do not know is not trusted */
		return drop_from(skb, &pkt, DROP_UNKNOWN_ENDPOINT, 0);

	/* Each handler parses its headers, then validates the source MAC and IP. */
	switch (pkt.eth_proto) {
	case ETH_P_ARP_:
		return from_container_arp(skb, cfg, &pkt);
#ifdef ENABLE_IPV4
	case ETH_P_IP_:
		return from_container_ipv4(skb, cfg, &pkt);
#endif
	case ETH_P_IPV6_:
		return from_container_ipv6(skb, cfg, &pkt);
	default:
		return drop_from(skb, &pkt, DROP_UNSUPPORTED_L3, cfg);
	}
}

/* Traffic the host stack routed to the container: track it, apply ingress policy. */
static __always_inline int to_container_ip(struct __sk_buff *skb, const struct ep_config *cfg,
					   const struct pkt_info *pkt)
{
	int ct;

	if (pkt->family == CPY_AF_INET)
		ct = ct_lookup4(skb, pkt, CT_INGRESS, 0);
	else
		ct = ct_lookup6(skb, pkt, CT_INGRESS, 0);
	if (ct < 0)
		return drop_to(skb, pkt, DROP_CT_ERROR, cfg);
	/* Source identity 0: resolving it (ipcache) belongs to the policy step. */
	if (policy_can_ingress(cfg->ep_id, cfg->identity, 0, pkt, ct) < 0)
		return drop_to(skb, pkt, DROP_POLICY_DENIED, cfg);
	metric_count(METRIC_TO_EP_FROM_STACK, skb->len);
	return TC_ACT_OK;
}

int to_container(struct __sk_buff *skb)
{
	struct pkt_info pkt = {};
	struct ep_config *cfg;

	if (eth_load(skb, &pkt) < 0)
		return drop_to(skb, &pkt, DROP_INVALID_PACKET, 0);
	cfg = lookup_ep_config(skb->ifindex);
	if (!cfg)
		return drop_to(skb, &pkt, DROP_UNKNOWN_ENDPOINT, 0);

	switch (pkt.eth_proto) {
#ifdef ENABLE_IPV4
	case ETH_P_IP_:
		if (ipv4_load(skb, &pkt) < 0 || l4_load(skb, &pkt) < 0)
			return drop_to(skb, &pkt, DROP_INVALID_PACKET, cfg);
		return to_container_ip(skb, cfg, &pkt);
#endif
#ifdef ENABLE_IPV6
	case ETH_P_IPV6_:
		if (ipv6_load(skb, &pkt) < 0 || l4_load(skb, &pkt) < 0)
			return drop_to(skb, &pkt, DROP_INVALID_PACKET, cfg);
		if (pkt.proto == IPPROTO_ICMPV6 && ipv6_is_nd_or_mld(pkt.icmp_type))
			return TC_ACT_OK;
		return to_container_ip(skb, cfg, &pkt);
#endif
	default:
		/* ARP and anything else from the node itself. */
		return TC_ACT_OK;
	}
}
