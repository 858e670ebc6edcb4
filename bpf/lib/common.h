/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Shared definitions for the cilium-py datapath: kernel headers, byte order
 * helpers, the pinned-map macro and the compile-time options the loader passes
 * as -D flags (it compiles once per agent start, never per endpoint).
 */
#ifndef CPY_COMMON_H
#define CPY_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

#ifndef CPY_PIN_ROOT
#error "CPY_PIN_ROOT (the bpffs directory the maps are pinned in) must be defined"
#endif

/*
 * Every map that holds state the agent must find again after a restart is
 * pinned as CPY_PIN_ROOT/<name>. bcc reuses an existing pin (so a fresh
 * compile keeps the old state) and creates and pins the map otherwise.
 */
#define CPY_PINNED_MAP(_type, _key, _value, _name, _size) \
	BPF_TABLE_PINNED(_type, _key, _value, _name, _size, CPY_PIN_ROOT "/" #_name)
/* The same with map flags (an LPM trie must be created BPF_F_NO_PREALLOC). */
#define CPY_PINNED_MAP_F(_type, _key, _value, _name, _size, _flags) \
	BPF_TABLE_PINNED(_type, _key, _value, _name, _size, CPY_PIN_ROOT "/" #_name, _flags)

/* Map sizes: overridable by the loader, which checks pinned maps against them. */
#ifndef CT_MAP_SIZE
#define CT_MAP_SIZE 65536
#endif
#ifndef ENDPOINT_MAP_SIZE
#define ENDPOINT_MAP_SIZE 4096
#endif
#ifndef IPCACHE_MAP_SIZE
#define IPCACHE_MAP_SIZE 16384
#endif
#ifndef POLICY_MAP_SIZE
#define POLICY_MAP_SIZE 65536
#endif

#define DROP_REASON_MAX 32
#define METRIC_MAX 16

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define cpy_htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define cpy_htonl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define cpy_htons(x) ((__u16)(x))
#define cpy_htonl(x) ((__u32)(x))
#endif
#define cpy_ntohs(x) cpy_htons(x)
#define cpy_ntohl(x) cpy_htonl(x)

#define ETH_HLEN_ 14

/* Address families as carried in keys and events. */
#define CPY_AF_INET 4
#define CPY_AF_INET6 6

/* Reserved identities the programs use themselves (see cilium_py.labels). */
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* Which program saw the packet (events, metrics). */
#define DIR_FROM_CONTAINER 0
#define DIR_TO_CONTAINER 1

/*
 * What one program invocation learned about a packet. Parsed once, then
 * shared by source validation, conntrack, delivery and drop events so that
 * the stack holds a single copy of the addresses.
 */
struct pkt_info {
	__u8 saddr[16];		/* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 smac[6];
	__u8 dmac[6];
	__be16 sport;		/* ICMP echo: the identifier */
	__be16 dport;
	__u16 eth_proto;	/* host byte order */
	__u8 family;		/* 0 (not IP), CPY_AF_INET, CPY_AF_INET6 */
	__u8 proto;		/* L4 protocol */
	__u8 ttl;		/* TTL / hop limit */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 frag;		/* PKT_FRAG_*: whether this is a fragment, and which */
	__u32 l4_off;		/* from the start of the frame */
	__be32 frag_id;		/* IPv4 identification (16 bits) or IPv6 fragment id */
	__u8 frag_nh;		/* protocol named by the fragments (lib/ipfrag.h) */
	__u8 pad[3];
};

#define PKT_FRAG_NONE 0
#define PKT_FRAG_FIRST 1	/* offset 0, more to come: carries the L4 header */
#define PKT_FRAG_LATER 2	/* offset > 0: no L4 header, ports from lib/ipfrag.h */

static __always_inline int addr4_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b;
}

/* Addresses live at 4-byte aligned offsets in every struct: compare by word. */
static __always_inline int addr6_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline void addr6_copy(__u8 *dst, const __u8 *src)
{
	__u32 *d = (__u32 *)dst;
	const __u32 *s = (const __u32 *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

#endif /* CPY_COMMON_H */
