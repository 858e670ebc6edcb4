/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Ethernet: read the header, compare MAC addresses. */
#ifndef CPY_ETH_H
#define CPY_ETH_H

#include "lib/access.h"
#include "lib/common.h"

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
} __attribute__((packed));

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
	dst[4] = src[4];
	dst[5] = src[5];
}

/* Fill the MACs and ethertype of @pkt; -1 when the frame is too short. */
static __always_inline int eth_load(struct __sk_buff *skb, struct pkt_info *pkt)
{
	struct eth_hdr buf;
	const struct eth_hdr *eth = pkt_ptr(skb, 0, sizeof(buf), &buf);

	if (!eth)
		return -1;
	mac_copy(pkt->dmac, eth->dst);
	mac_copy(pkt->smac, eth->src);
	pkt->eth_proto = cpy_ntohs(eth->proto);
	return 0;
}

#endif /* CPY_ETH_H */
