/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Local endpoints. Two pinned maps, both written only by the agent:
 *
 *  cpy_lxc     endpoint IP -> where it lives (host veth ifindex, MACs, ids).
 *              Used to deliver straight to a local destination.
 *  cpy_ep_cfg  host veth ifindex -> the endpoint attached there (its MAC and
 *              addresses). Used by the programs on that veth to validate the
 *              source of what the container sends. This replaces the per-
 *              endpoint constants Cilium compiles in: one compile serves all.
 *
 * Both carry the same flags word: address families, and the endpoint's
 * policy summary (which directions are enforced, which key shapes its policy
 * entries use; lib/policy.h). The summary sits in cpy_lxc too because direct
 * delivery checks the destination's ingress policy with only its cpy_lxc
 * entry at hand.
 */
#ifndef CPY_ENDPOINTS_H
#define CPY_ENDPOINTS_H

#include "lib/common.h"

#define EP_F_HAS_IPV4 0x1
#define EP_F_HAS_IPV6 0x2
#define EP_F_INGRESS_ENFORCED 0x4
#define EP_F_EGRESS_ENFORCED 0x8
/* Bits 8-13: key shapes of the ingress entries, 16-21: egress (POLICY_SHAPE_*). */
#define EP_SHAPES_INGRESS_SHIFT 8
#define EP_SHAPES_EGRESS_SHIFT 16

struct endpoint_key {
	__u8 addr[16];		/* IPv4 in the first 4 bytes, rest zero */
	__u8 family;		/* CPY_AF_INET / CPY_AF_INET6 */
	__u8 pad[3];
};

struct endpoint_info {
	__u32 ifindex;		/* host-side veth */
	__u32 ep_id;
	__u32 identity;
	__u32 flags;
	__u8 mac[6];		/* container side */
	__u8 pad1[2];
	__u8 node_mac[6];	/* host-side veth: the container's gateway MAC */
	__u8 pad2[2];
};

struct ep_config {
	__u32 ep_id;
	__u32 identity;
	__u32 flags;		/* EP_F_* */
	__u8 ipv4[4];
	__u8 ipv6[16];
	__u8 ipv6_ll[16];	/* link-local source allowed for ND/MLD */
	__u8 mac[6];
	__u8 node_mac[6];
	__u8 pad[4];
};

CPY_PINNED_MAP("hash", struct endpoint_key, struct endpoint_info, cpy_lxc, ENDPOINT_MAP_SIZE);
CPY_PINNED_MAP("hash", __u32, struct ep_config, cpy_ep_cfg, ENDPOINT_MAP_SIZE);

static __always_inline struct ep_config *lookup_ep_config(__u32 ifindex)
{
	return cpy_ep_cfg.lookup(&ifindex);
}

static __always_inline struct endpoint_info *lookup_endpoint(const struct pkt_info *pkt)
{
	struct endpoint_key key = {};

	if (pkt->family == CPY_AF_INET)
		*(__u32 *)key.addr = *(const __u32 *)pkt->daddr;
	else
		addr6_copy(key.addr, pkt->daddr);
	key.family = pkt->family;
	return cpy_lxc.lookup(&key);
}

#endif /* CPY_ENDPOINTS_H */
