/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* IPv6: parse the header and extension headers. */
#ifndef CPY_IPV6_H
#define CPY_IPV6_H

#include "lib/access.h"
#include "lib/common.h"

struct ipv6_hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

#define IPV6_MAX_EXTHDRS 4

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

/* ICMPv6 types the container sends from its link-local address. */
#define ICMP6_MLD_QUERY 130
#define ICMP6_MLD_REPORT 131
#define ICMP6_MLD_DONE 132
#define ICMP6_ROUTER_SOLICIT 133
#define ICMP6_REDIRECT 137
#define ICMP6_MLD2_REPORT 143

static __always_inline int ipv6_is_nd_or_mld(__u8 type)
{
	return (type >= ICMP6_MLD_QUERY && type <= ICMP6_REDIRECT) ||
	       type == ICMP6_MLD2_REPORT;
}

static __always_inline int ipv6_is_unspecified(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline int ipv6_is_exthdr(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST ||
	       nh == NEXTHDR_FRAGMENT || nh == NEXTHDR_AUTH;
}

#define IPV6_MALFORMED -1
#define IPV6_CHAIN_TOO_LONG -2

/*
 * Walk at most IPV6_MAX_EXTHDRS extension headers from @off (the header
 * named @nh) to the upper-layer protocol; on return @off and @nh name it.
 * Used for the packet itself and for the packet an ICMPv6 error quotes, so
 * both resolve to the same tuple. With @pkt, a fragment header fills its
 * fragment fields; a non-first fragment ends the walk there (what follows is
 * payload, not headers). Returns 0, IPV6_MALFORMED, or IPV6_CHAIN_TOO_LONG
 * when more headers follow than we walk (such a packet cannot be classified,
 * so it is dropped under its own reason rather than as malformed).
 */
static __always_inline int ipv6_skip_exthdrs(struct __sk_buff *skb, __u32 *off, __u8 *nh,
					     struct pkt_info *pkt)
{
	int i;

#pragma unroll
	for (i = 0; i < IPV6_MAX_EXTHDRS; i++) {
		__u8 opt[8];

		if (!ipv6_is_exthdr(*nh))
			return 0;
		if (bpf_skb_load_bytes(skb, *off, opt, sizeof(opt)) < 0)
			return IPV6_MALFORMED;
		if (*nh == NEXTHDR_FRAGMENT) {
			/* offset (13 bits) << 3 | reserved (2) | more-fragments (1) */
			__u16 frag = ((__u16)opt[2] << 8) | opt[3];

			*off += 8;
			*nh = opt[0];
			if (!pkt)
				continue;
			__builtin_memcpy(&pkt->frag_id, &opt[4], 4);
			pkt->frag_nh = opt[0];
			if (frag & 0xfff8) {
				pkt->frag = PKT_FRAG_LATER;
				return 0;
			}
			if (frag & 1)
				pkt->frag = PKT_FRAG_FIRST;
			continue;
		}
		if (*nh == NEXTHDR_AUTH)
			*off += ((__u32)opt[1] + 2) * 4;
		else
			*off += ((__u32)opt[1] + 1) * 8;
		*nh = opt[0];
	}
	return ipv6_is_exthdr(*nh) ? IPV6_CHAIN_TOO_LONG : 0;
}

/*
 * Fill @pkt from the fixed header and the extension headers. Returns 0,
 * IPV6_MALFORMED or IPV6_CHAIN_TOO_LONG.
 */
static __always_inline int ipv6_load(struct __sk_buff *skb, struct pkt_info *pkt)
{
	struct ipv6_hdr buf;
	const struct ipv6_hdr *ip6 = pkt_ptr(skb, ETH_HLEN_, sizeof(buf), &buf);
	__u32 off = ETH_HLEN_ + sizeof(buf);
	__u8 nh;
	int ret;

	if (!ip6 || (((const __u8 *)&ip6->vtc_flow)[0] >> 4) != 6)
		return IPV6_MALFORMED;
	pkt->family = CPY_AF_INET6;
	addr6_copy(pkt->saddr, ip6->saddr);
	addr6_copy(pkt->daddr, ip6->daddr);
	pkt->ttl = ip6->hop_limit;
	nh = ip6->nexthdr;
	ret = ipv6_skip_exthdrs(skb, &off, &nh, pkt);
	if (ret < 0)
		return ret;
	pkt->proto = nh;
	pkt->l4_off = off;
	return 0;
}

#endif /* CPY_IPV6_H */
