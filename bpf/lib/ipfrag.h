/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Ports of fragmented datagrams.
 *
 * Only the first fragment of a datagram carries the transport header; the
 * others would reach policy and conntrack without ports, so a fragmented
 * datagram to an allowed port would be dropped and its reply would miss its
 * connection. The first fragment's ports (and protocol) are recorded under
 * {source, destination, fragment id, protocol}, the key by which the
 * receiver reassembles, and later fragments take them from there, so every
 * fragment of a datagram gets its flow's verdict. The record is made while
 * parsing, before any verdict: later fragments of a denied datagram are then
 * denied by policy like their first fragment, not for want of ports.
 *
 * A later fragment whose first fragment was never seen (out of order, or
 * forged) cannot be classified and is dropped (DROP_FRAG_NOT_FOUND). Entries
 * are not removed when the last fragment passes: the same packet can still
 * be parsed by the receiving endpoint's program after the sender's. The LRU
 * ages them out; a reused fragment id overwrites its entry.
 */
#ifndef CPY_IPFRAG_H
#define CPY_IPFRAG_H

#include "lib/common.h"

#ifndef FRAG_MAP_SIZE
#define FRAG_MAP_SIZE 8192
#endif

struct frag_key {
	__u8 saddr[16];		/* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__be32 id;		/* IPv4: the 16-bit identification in the first 2 bytes */
	__u8 proto;		/* IPv4 protocol; IPv6: the fragment header's next header */
	__u8 family;
	__u16 pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
	__u8 proto;		/* upper-layer protocol of the datagram */
	__u8 pad[3];
};

CPY_PINNED_MAP("lru_hash", struct frag_key, struct frag_ports, cpy_frag, FRAG_MAP_SIZE);

static __always_inline void frag_key_of(struct frag_key *key, const struct pkt_info *pkt)
{
	addr6_copy(key->saddr, pkt->saddr);
	addr6_copy(key->daddr, pkt->daddr);
	key->id = pkt->frag_id;
	key->proto = pkt->frag_nh;
	key->family = pkt->family;
}

/* First fragment: remember its ports for the ones that follow. */
static __always_inline void frag_record(const struct pkt_info *pkt)
{
	struct frag_key key = {};
	struct frag_ports val = {};

	frag_key_of(&key, pkt);
	val.sport = pkt->sport;
	val.dport = pkt->dport;
	val.proto = pkt->proto;
	cpy_frag.update(&key, &val);
}

/* Later fragment: the ports its first fragment had; -1 when it was not seen. */
static __always_inline int frag_restore(struct pkt_info *pkt)
{
	struct frag_key key = {};
	struct frag_ports *val;

	frag_key_of(&key, pkt);
	val = cpy_frag.lookup(&key);
	if (!val)
		return -1;
	pkt->sport = val->sport;
	pkt->dport = val->dport;
	pkt->proto = val->proto;
	return 0;
}

#endif /* CPY_IPFRAG_H */
