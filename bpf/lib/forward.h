/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Rewriting a packet for direct delivery, in one helper call.
 *
 * To the receiving container the packet must look routed by the node: its
 * gateway's MAC as source, its own as destination, TTL / hop limit one less
 * (and the IPv4 header checksum patched to match). All of that lies in the
 * first 26 bytes of the frame (22 for IPv6), so the new bytes are built on
 * the stack and stored with a single bpf_skb_store_bytes. That is also the
 * only place the skb has to be made writable (uncloned, as every TCP
 * transmit skb is a clone): once per delivered packet and never for traffic
 * handed to the host stack.
 */
#ifndef CPY_FORWARD_H
#define CPY_FORWARD_H

#include "lib/access.h"
#include "lib/common.h"
#include "lib/eth.h"

#define FWD_IP4_BYTES 12	/* up to and including the header checksum */
#define FWD_IP6_BYTES 8		/* up to and including the hop limit */

struct fwd_hdr {
	struct eth_hdr eth;
	__u8 ip[FWD_IP4_BYTES];
} __attribute__((packed));

/*
 * One's complement update of a 16-bit checksum when one 16-bit word of the
 * data changes from @old to @new (RFC 1624, eqn. 3). All three values are
 * taken as they lie in memory: the arithmetic does not depend on byte order.
 */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline int fwd_rewrite(struct __sk_buff *skb, const struct pkt_info *pkt,
				       const __u8 *smac, const __u8 *dmac)
{
	struct fwd_hdr hdr;
	__u8 buf[FWD_IP4_BYTES];
	__u32 len = pkt->family == CPY_AF_INET ? FWD_IP4_BYTES : FWD_IP6_BYTES;
	const __u8 *ip = pkt_ptr(skb, ETH_HLEN_, FWD_IP4_BYTES, buf);

	if (!ip)
		return -1;
	mac_copy(hdr.eth.dst, dmac);
	mac_copy(hdr.eth.src, smac);
	hdr.eth.proto = cpy_htons(pkt->eth_proto);
	__builtin_memcpy(hdr.ip, ip, FWD_IP4_BYTES);
	if (pkt->family == CPY_AF_INET) {
		__u16 old, new, check;

		/* TTL and protocol form the header's fifth 16-bit word. */
		__builtin_memcpy(&old, &hdr.ip[8], 2);
		hdr.ip[8] -= 1;
		__builtin_memcpy(&new, &hdr.ip[8], 2);
		__builtin_memcpy(&check, &hdr.ip[10], 2);
		check = csum_replace2(check, old, new);
		__builtin_memcpy(&hdr.ip[10], &check, 2);
	} else {
		hdr.ip[7] -= 1;	/* hop limit: covered by no checksum */
	}
	return bpf_skb_store_bytes(skb, 0, &hdr, ETH_HLEN_ + len, 0) < 0 ? -1 : 0;
}

#endif /* CPY_FORWARD_H */
