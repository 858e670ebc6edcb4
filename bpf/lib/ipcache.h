/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The ipcache: address or prefix -> security identity, one LPM trie for both
 * families, written only by the agent (local endpoints' addresses, the
 * node's own addresses as host, CIDR prefixes named by policy). A miss means
 * the address is outside everything the agent knows: world.
 *
 * The trie key is {prefixlen, family, pad, addr}: the family byte (and the
 * zero padding) are part of the matched data, so a prefix always covers
 * 32 bits before its address bits and IPv4 and IPv6 never match each other.
 */
#ifndef CPY_IPCACHE_H
#define CPY_IPCACHE_H

#include "lib/common.h"

#define IPCACHE_PREFIX_BASE 32	/* family + pad, always matched */

struct ipcache_key {
	__u32 prefixlen;	/* IPCACHE_PREFIX_BASE + address prefix length */
	__u8 family;		/* CPY_AF_INET / CPY_AF_INET6 */
	__u8 pad[3];
	__u8 addr[16];		/* IPv4 in the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;		/* reserved */
};

CPY_PINNED_MAP_F("lpm_trie", struct ipcache_key, struct ipcache_value, cpy_ipcache,
		 IPCACHE_MAP_SIZE, BPF_F_NO_PREALLOC);

/* Identity of @addr (a packet's address of @family); world when unknown. */
static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr)
{
	struct ipcache_key key = {};
	struct ipcache_value *v;

	key.family = family;
	if (family == CPY_AF_INET) {
		key.prefixlen = IPCACHE_PREFIX_BASE + 32;
		*(__u32 *)key.addr = *(const __u32 *)addr;
	} else {
		key.prefixlen = IPCACHE_PREFIX_BASE + 128;
		addr6_copy(key.addr, addr);
	}
	v = cpy_ipcache.lookup(&key);
	return v ? v->identity : IDENTITY_WORLD;
}

#endif /* CPY_IPCACHE_H */
