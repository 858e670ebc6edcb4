/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Neighbour discovery and MLD from a container (RFC 4861, 3810).
 *
 * A container's kernel speaks ND and MLD on its link whatever the policy:
 * they are the only packets that may use its link-local or the unspecified
 * address as source, and they are not tracked. So they are held to what a
 * host, as opposed to a router, may say on its link:
 *
 *  - Router Advertisements and Redirects: never (DROP_FORBIDDEN_ICMPV6).
 *  - Neighbour Advertisements: only for its own addresses (the target),
 *    with its own MAC in the target link-layer option.
 *  - Neighbour Solicitations: the source link-layer option is its own MAC;
 *    from :: (duplicate address detection) only for its own addresses.
 *  - Router Solicitations: the source link-layer option is its own MAC.
 *
 * And they bypass conntrack and policy only on their way to the node: a
 * link-local or multicast destination (which the node never forwards) or an
 * address of the node itself. ND sent anywhere else is ordinary ICMPv6,
 * tracked and policed like any other packet.
 */
#ifndef CPY_ICMP6_H
#define CPY_ICMP6_H

#include "lib/common.h"
#include "lib/drop.h"
#include "lib/endpoints.h"
#include "lib/eth.h"
#include "lib/ipcache.h"
#include "lib/ipv6.h"

#define ICMP6_ROUTER_ADVERT 134
#define ICMP6_NEIGH_SOLICIT 135
#define ICMP6_NEIGH_ADVERT 136

#define ND_OPT_SOURCE_LLADDR 1
#define ND_OPT_TARGET_LLADDR 2
/* Options walked; a message with more is refused (legitimate ones carry 1-2). */
#define ND_MAX_OPTS 4

struct nd_opt_lladdr {
	__u8 type;
	__u8 len;		/* in units of 8 bytes */
	__u8 mac[6];
};

static __always_inline int nd_own_address(const struct ep_config *cfg, const __u8 *addr)
{
	return addr6_eq(addr, cfg->ipv6_ll) ||
	       ((cfg->flags & EP_F_HAS_IPV6) && addr6_eq(addr, cfg->ipv6));
}

/*
 * Every link-layer address option from @off to the end of the packet must
 * name the container's MAC. Returns 0 or a drop reason.
 */
static __always_inline int nd_check_options(struct __sk_buff *skb, const struct ep_config *cfg,
					    __u32 off)
{
	int i;

#pragma unroll
	for (i = 0; i < ND_MAX_OPTS; i++) {
		struct nd_opt_lladdr opt;

		if (off >= skb->len)
			return 0;
		if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)) < 0 || opt.len == 0)
			return DROP_INVALID_PACKET;
		if ((opt.type == ND_OPT_SOURCE_LLADDR || opt.type == ND_OPT_TARGET_LLADDR) &&
		    (opt.len != 1 || !mac_eq(opt.mac, cfg->mac)))
			return DROP_INVALID_SMAC;
		off += (__u32)opt.len * 8;
	}
	return off >= skb->len ? 0 : DROP_FORBIDDEN_ICMPV6;
}

/* What a container's ND/MLD message may say (see above): 0 or a drop reason. */
static __always_inline int nd_validate(struct __sk_buff *skb, const struct ep_config *cfg,
				       const struct pkt_info *pkt)
{
	__u8 target[16];
	__u8 type = pkt->icmp_type;

	if (type == ICMP6_ROUTER_ADVERT || type == ICMP6_REDIRECT)
		return DROP_FORBIDDEN_ICMPV6;
	if (type == ICMP6_ROUTER_SOLICIT)
		return nd_check_options(skb, cfg, pkt->l4_off + 8);
	if (type != ICMP6_NEIGH_SOLICIT && type != ICMP6_NEIGH_ADVERT)
		return 0;	/* MLD */
	/* type, code, checksum, flags/reserved (4), target address (16) */
	if (bpf_skb_load_bytes(skb, pkt->l4_off + 8, target, sizeof(target)) < 0)
		return DROP_INVALID_PACKET;
	if ((type == ICMP6_NEIGH_ADVERT || ipv6_is_unspecified(pkt->saddr)) &&
	    !nd_own_address(cfg, target))
		return DROP_INVALID_SIP;
	return nd_check_options(skb, cfg, pkt->l4_off + 24);
}

/* Is this ND/MLD message for the node alone (so it may skip conntrack and policy)? */
static __always_inline int nd_for_node(const struct pkt_info *pkt)
{
	if (pkt->daddr[0] == 0xff)	/* multicast: the node does not route it */
		return 1;
	if (pkt->daddr[0] == 0xfe && (pkt->daddr[1] & 0xc0) == 0x80)	/* fe80::/10 */
		return 1;
	return ipcache_identity(CPY_AF_INET6, pkt->daddr) == IDENTITY_HOST;
}

#endif /* CPY_ICMP6_H */
