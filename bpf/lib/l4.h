/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Transport headers: ports (or the ICMP echo identifier) and TCP flags. */
#ifndef CPY_L4_H
#define CPY_L4_H

#include "lib/access.h"
#include "lib/common.h"
#include "lib/ipfrag.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8
#define ICMP6_ECHO_REQUEST_ 128
#define ICMP6_ECHO_REPLY_ 129

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct tcp_ports_flags {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff;
	__u8 flags;
};

struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__be16 csum;
	__be16 id;
	__be16 seq;
};

#define L4_MALFORMED -1
#define L4_FRAG_NOT_FOUND -2

/*
 * Fill ports / TCP flags / ICMP type. Echo requests carry their identifier
 * as the source "port" and replies as the destination "port", so that a reply
 * is exactly the reverse tuple of its request. A first fragment records its
 * ports, later fragments (no L4 header) take them from that record
 * (lib/ipfrag.h). Returns 0, L4_MALFORMED or L4_FRAG_NOT_FOUND.
 */
static __always_inline int l4_load(struct __sk_buff *skb, struct pkt_info *pkt)
{
	if (pkt->frag == PKT_FRAG_LATER)
		return frag_restore(pkt) < 0 ? L4_FRAG_NOT_FOUND : 0;

	if (pkt->proto == IPPROTO_TCP) {
		struct tcp_ports_flags buf;
		const struct tcp_ports_flags *tcp = pkt_ptr(skb, pkt->l4_off, sizeof(buf), &buf);

		if (!tcp)
			return L4_MALFORMED;
		pkt->sport = tcp->sport;
		pkt->dport = tcp->dport;
		pkt->tcp_flags = tcp->flags;
	} else if (pkt->proto == IPPROTO_UDP) {
		__be16 buf[2];
		const __be16 *ports = pkt_ptr(skb, pkt->l4_off, sizeof(buf), buf);

		if (!ports)
			return L4_MALFORMED;
		pkt->sport = ports[0];
		pkt->dport = ports[1];
	} else if (pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6) {
		struct icmp_echo_hdr buf;
		const struct icmp_echo_hdr *icmp = pkt_ptr(skb, pkt->l4_off, sizeof(buf), &buf);
		__u8 type;

		if (!icmp)
			return L4_MALFORMED;
		type = icmp->type;
		pkt->icmp_type = type;
		if (type == ICMP_ECHO_ && pkt->proto == IPPROTO_ICMP)
			pkt->sport = icmp->id;
		else if (type == ICMP_ECHOREPLY_ && pkt->proto == IPPROTO_ICMP)
			pkt->dport = icmp->id;
		else if (type == ICMP6_ECHO_REQUEST_ && pkt->proto == IPPROTO_ICMPV6)
			pkt->sport = icmp->id;
		else if (type == ICMP6_ECHO_REPLY_ && pkt->proto == IPPROTO_ICMPV6)
			pkt->dport = icmp->id;
	}
	if (pkt->frag == PKT_FRAG_FIRST)
		frag_record(pkt);
	return 0;
}

#endif /* CPY_L4_H */
