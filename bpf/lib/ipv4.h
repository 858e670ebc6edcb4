/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* IPv4: parse the header into pkt_info. */
#ifndef CPY_IPV4_H
#define CPY_IPV4_H

#include "lib/access.h"
#include "lib/common.h"

struct ipv4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

#define IPV4_MF 0x2000		/* "more fragments" */
#define IPV4_OFFSET_MASK 0x1fff

static __always_inline int ipv4_load(struct __sk_buff *skb, struct pkt_info *pkt)
{
	struct ipv4_hdr buf;
	const struct ipv4_hdr *ip = pkt_ptr(skb, ETH_HLEN_, sizeof(buf), &buf);
	__u32 ihl;
	__u16 frag;

	if (!ip || (ip->ver_ihl >> 4) != 4)
		return -1;
	ihl = (ip->ver_ihl & 0x0f) * 4;
	if (ihl < sizeof(buf))
		return -1;
	pkt->family = CPY_AF_INET;
	*(__u32 *)pkt->saddr = ip->saddr;
	*(__u32 *)pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->ttl = ip->ttl;
	frag = cpy_ntohs(ip->frag_off);
	if (frag & IPV4_OFFSET_MASK)
		pkt->frag = PKT_FRAG_LATER;
	else if (frag & IPV4_MF)
		pkt->frag = PKT_FRAG_FIRST;
	pkt->frag_id = ip->id;
	pkt->frag_nh = ip->protocol;
	pkt->l4_off = ETH_HLEN_ + ihl;
	return 0;
}

#endif /* CPY_IPV4_H */
