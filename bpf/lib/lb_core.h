/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * What both load balancers share: the service maps and the choice of a
 * backend. The packet path (lib/lb.h, in from_container) and the socket path
 * (bpf_sock.c, at connect/sendmsg of the node's own sockets) are separate
 * compile units; both declare these maps pinned, so bcc opens the very same
 * maps in each and a service written once by the agent is balanced by both,
 * with the same slots (weights) and the same affinity table.
 *
 *   cpy_lb_svc       {frontend, slot} -> slot 0: the service (slot count, id,
 *                    flags, affinity timeout); slot 1..count: a backend id.
 *                    Weights are slots: a backend of weight 3 fills three.
 *   cpy_lb_backend   backend id -> address and port.
 *   cpy_lb_affinity  LRU, {client address, service} -> backend id and when it
 *                    was last used (session affinity by client address).
 *
 * Nothing here touches a packet or a socket, so that neither program type's
 * headers are needed to include it. Time is monotonic seconds from
 * bpf_ktime_get_coarse_ns(), in both units (affinity entries are shared).
 */
#ifndef CPY_LB_CORE_H
#define CPY_LB_CORE_H

#include "lib/common.h"

#ifndef LB_SVC_MAP_SIZE
#define LB_SVC_MAP_SIZE 65536
#endif
#ifndef LB_BACKEND_MAP_SIZE
#define LB_BACKEND_MAP_SIZE 65536
#endif
#ifndef LB_CONN_MAP_SIZE
#define LB_CONN_MAP_SIZE 65536
#endif
#ifndef LB_AFFINITY_MAP_SIZE
#define LB_AFFINITY_MAP_SIZE 16384
#endif
/* The programs' own connection lifetimes (lib/conntrack.h may not be included yet). */
#ifndef LB_LIFETIME_TCP
#define LB_LIFETIME_TCP 21600
#endif
#ifndef LB_LIFETIME_NONTCP
#define LB_LIFETIME_NONTCP 60
#endif

#define LB_SVC_F_AFFINITY 0x1	/* session affinity by client address */

struct lb_svc_key {
	__u8 addr[16];		/* frontend address */
	__be16 port;		/* frontend port */
	__u8 proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;
	__u16 slot;		/* 0: the service, 1..count: its backends */
	__u16 pad;
};

struct lb_svc_value {
	__u32 count;		/* slot 0: number of backend slots; else the backend id */
	__u32 svc_id;
	__u16 flags;		/* LB_SVC_F_* */
	__u16 pad;
	__u32 affinity_timeout;	/* seconds */
};

struct lb_backend {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* Where a balanced flow goes (forward maps) or where it appears to come from (reverse). */
struct lb_nat {
	__u8 addr[16];		/* the backend (forward) or the frontend (reverse) */
	__be16 port;
	__u16 pad;
	__u32 svc_id;
	__u32 backend_id;
	__u32 expires;		/* monotonic seconds; forward maps only */
};

struct lb_affinity_key {
	__u8 client[16];
	__u32 svc_id;
	__u8 family;
	__u8 pad[3];
};

struct lb_affinity_value {
	__u32 backend_id;
	__u32 last_used;	/* monotonic seconds */
};

CPY_PINNED_MAP("hash", struct lb_svc_key, struct lb_svc_value, cpy_lb_svc, LB_SVC_MAP_SIZE);
CPY_PINNED_MAP("hash", __u32, struct lb_backend, cpy_lb_backend, LB_BACKEND_MAP_SIZE);
CPY_PINNED_MAP("lru_hash", struct lb_affinity_key, struct lb_affinity_value, cpy_lb_affinity,
	       LB_AFFINITY_MAP_SIZE);

static __always_inline void lb_addr_copy(__u8 *dst, const __u8 *src, __u8 family)
{
	if (family == CPY_AF_INET)
		*(__u32 *)dst = *(const __u32 *)src;
	else
		addr6_copy(dst, src);
}

static __always_inline __u32 lb_lifetime(__u8 proto)
{
	return proto == IPPROTO_TCP ? LB_LIFETIME_TCP : LB_LIFETIME_NONTCP;
}

/*
 * The backend id for a new connection of @client (an address of @family) to
 * the service @svc: the client's affine backend while that is live and still
 * in the service, else a random slot. 0: none (a slot vanished under an
 * update).
 */
static __always_inline __u32 lb_choose(const struct lb_svc_key *skey,
				       const struct lb_svc_value *svc,
				       const __u8 *client, __u8 family, __u32 now)
{
	struct lb_svc_key key = *skey;
	struct lb_svc_value *slot;
	struct lb_affinity_key akey = {};
	struct lb_affinity_value aval = {};

	if (svc->flags & LB_SVC_F_AFFINITY) {
		struct lb_affinity_value *a;

		lb_addr_copy(akey.client, client, family);
		akey.svc_id = svc->svc_id;
		akey.family = family;
		a = cpy_lb_affinity.lookup(&akey);
		/* Still affine, and the backend still in the service (ids are per service). */
		if (a && a->last_used + svc->affinity_timeout >= now &&
		    cpy_lb_backend.lookup(&a->backend_id)) {
			if (a->last_used != now)
				a->last_used = now;
			return a->backend_id;
		}
	}
	key.slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = cpy_lb_svc.lookup(&key);
	if (!slot)
		return 0;
	if (svc->flags & LB_SVC_F_AFFINITY) {
		aval.backend_id = slot->count;
		aval.last_used = now;
		cpy_lb_affinity.update(&akey, &aval);
	}
	return slot->count;
}

#endif /* CPY_LB_CORE_H */
