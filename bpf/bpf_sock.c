/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Socket-level load balancing for the node's own processes (health checks, a
 * node-local client): cgroup sock_addr programs, attached by the agent to a
 * cgroup v2 directory (plugin/datapath/socklb.py).
 *
 * Why at the socket: the node's traffic never passes a from_container
 * program (host -> endpoint goes through the endpoint's to_container), and
 * translating once when the socket picks its peer costs nothing per packet:
 *
 *   connect4/6      TCP and connected UDP: the frontend a socket connects to
 *                   is replaced by a backend before the kernel routes it, so
 *                   every packet of the connection carries the backend's
 *                   address; nothing downstream (tc, conntrack, policy) sees
 *                   a frontend, so nothing balances it again, and replies
 *                   need no reverse NAT.
 *   sendmsg4/6      unconnected UDP: the same for each datagram with an
 *                   address, following a per-socket entry (cpy_lb_sock_fwd)
 *                   so that a socket's datagrams to one frontend keep one
 *                   backend while it lives (LB_LIFETIME_NONTCP, refreshed).
 *   recvmsg4/6      UDP replies: the source the application is told is the
 *                   frontend, not the backend (cpy_lb_sock_rev).
 *   getpeername4/6  a connected socket names the frontend as its peer.
 *
 * Backends come from the same pinned maps as the packet path (lib/lb_core.h):
 * the same slots, so the same weights, and the same affinity table, in which
 * the node counts as one client (address 0): while affine, all of the node's
 * sockets reach one backend.
 *
 * Only sockets of the agent's own network namespace are balanced
 * (cpy_lb_sock_cfg holds its netns cookie; 0 balances nothing): containers'
 * sockets may sit in the same cgroup tree but are balanced by their
 * from_container, and an agent in a test's node namespace must not touch any
 * other namespace's sockets.
 *
 * A frontend without backends refuses the connect or sendmsg (EPERM), the
 * socket-level form of the packet path's DROP_NO_SERVICE_BACKEND; so does a
 * full or failing map write, which would otherwise leave a reply without its
 * frontend. IPv4-mapped IPv6 destinations are not balanced.
 */
#include "lib/common.h"
#include "lib/lb_core.h"

/* Forward entries are for unconnected UDP only; every balanced socket has a reverse one. */
#ifndef LB_SOCK_FWD_MAP_SIZE
#define LB_SOCK_FWD_MAP_SIZE 16384
#endif
#ifndef LB_SOCK_REV_MAP_SIZE
#define LB_SOCK_REV_MAP_SIZE 65536
#endif

#define SOCK_PASS 1
#define SOCK_REFUSE 0

struct lb_sock_key {
	__u64 cookie;		/* bpf_get_socket_cookie() of the socket */
	__u8 addr[16];		/* frontend (cpy_lb_sock_fwd) or backend (cpy_lb_sock_rev) */
	__be16 port;
	__u8 proto;
	__u8 family;
	__u32 pad;
};

struct lb_sock_cfg {
	__u64 netns_cookie;	/* the namespace whose sockets are balanced; 0: none */
};

CPY_PINNED_MAP("lru_hash", struct lb_sock_key, struct lb_nat, cpy_lb_sock_fwd,
	       LB_SOCK_FWD_MAP_SIZE);
CPY_PINNED_MAP("lru_hash", struct lb_sock_key, struct lb_nat, cpy_lb_sock_rev,
	       LB_SOCK_REV_MAP_SIZE);
CPY_PINNED_MAP("array", __u32, struct lb_sock_cfg, cpy_lb_sock_cfg, 1);

static __always_inline int sock_ours(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct lb_sock_cfg *cfg = cpy_lb_sock_cfg.lookup(&zero);

	return cfg && cfg->netns_cookie && cfg->netns_cookie == bpf_get_netns_cookie(ctx);
}

static __always_inline void sock_read_addr(struct bpf_sock_addr *ctx, __u8 family, __u8 *addr)
{
	__u32 *a = (__u32 *)addr;

	if (family == CPY_AF_INET) {
		a[0] = ctx->user_ip4;
	} else {
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	}
}

static __always_inline void sock_write_addr(struct bpf_sock_addr *ctx, __u8 family,
					    const __u8 *addr, __be16 port)
{
	const __u32 *a = (const __u32 *)addr;

	if (family == CPY_AF_INET) {
		ctx->user_ip4 = a[0];
	} else {
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
	}
	ctx->user_port = (__u32)port;
}

/*
 * connect / sendmsg: when the destination is a frontend, pick (or, for
 * @sticky sendmsg, follow) this socket's backend and make it the
 * destination. Returns SOCK_PASS or SOCK_REFUSE.
 */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx, __u8 family, int sticky)
{
	struct lb_svc_key key = {};
	struct lb_svc_value *svc;
	struct lb_sock_key sk = {};
	struct lb_nat nat = {}, *fwd;
	struct lb_backend *be;
	__u8 client[16] = {};
	__u32 backend_id, now;
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_PASS;
	if (!sock_ours(ctx))
		return SOCK_PASS;
	sock_read_addr(ctx, family, key.addr);
	key.port = (__be16)ctx->user_port;
	key.proto = proto;
	key.family = family;
	svc = cpy_lb_svc.lookup(&key);
	if (!svc)
		return SOCK_PASS;

	now = (__u32)(bpf_ktime_get_coarse_ns() / 1000000000ULL);	/* as ct_now() */
	sk.cookie = bpf_get_socket_cookie(ctx);
	lb_addr_copy(sk.addr, key.addr, family);
	sk.port = key.port;
	sk.proto = proto;
	sk.family = family;
	if (sticky) {
		fwd = cpy_lb_sock_fwd.lookup(&sk);
		/* A flow of a service deleted since (another id, same frontend) is new. */
		if (fwd && fwd->expires >= now && fwd->svc_id == svc->svc_id) {
			__u32 expires = now + lb_lifetime(proto);

			if (fwd->expires != expires)
				fwd->expires = expires;
			sock_write_addr(ctx, family, fwd->addr, fwd->port);
			return SOCK_PASS;
		}
	}

	if (svc->count == 0)
		return SOCK_REFUSE;
	backend_id = lb_choose(&key, svc, client, family, now);
	be = backend_id ? cpy_lb_backend.lookup(&backend_id) : 0;
	if (!be)
		return SOCK_REFUSE;

	/* The reverse entry first: a reply must never show the backend. */
	nat.svc_id = svc->svc_id;
	nat.backend_id = backend_id;
	lb_addr_copy(nat.addr, key.addr, family);
	nat.port = key.port;
	{
		struct lb_sock_key r = sk;

		lb_addr_copy(r.addr, be->addr, family);
		r.port = be->port;
		if (cpy_lb_sock_rev.update(&r, &nat) < 0)
			return SOCK_REFUSE;
	}
	if (sticky) {
		lb_addr_copy(nat.addr, be->addr, family);
		nat.port = be->port;
		nat.expires = now + lb_lifetime(proto);
		if (cpy_lb_sock_fwd.update(&sk, &nat) < 0)
			return SOCK_REFUSE;
	}
	sock_write_addr(ctx, family, be->addr, be->port);
	return SOCK_PASS;
}

/* recvmsg / getpeername: a backend this socket was balanced to is shown as its frontend. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx, __u8 family, __u8 proto)
{
	struct lb_sock_key sk = {};
	struct lb_nat *nat;

	if (!sock_ours(ctx))
		return SOCK_PASS;
	sk.cookie = bpf_get_socket_cookie(ctx);
	sock_read_addr(ctx, family, sk.addr);
	sk.port = (__be16)ctx->user_port;
	sk.proto = proto;
	sk.family = family;
	nat = cpy_lb_sock_rev.lookup(&sk);
	if (nat)
		sock_write_addr(ctx, family, nat->addr, nat->port);
	return SOCK_PASS;
}

int sock4_connect(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, CPY_AF_INET, 0);
}

int sock6_connect(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, CPY_AF_INET6, 0);
}

int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, CPY_AF_INET, 1);
}

int sock6_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, CPY_AF_INET6, 1);
}

int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, CPY_AF_INET, IPPROTO_UDP);
}

int sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, CPY_AF_INET6, IPPROTO_UDP);
}

/* getpeername does not say the protocol: the socket's own. */
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, CPY_AF_INET, ctx->protocol);
}

int sock6_getpeername(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, CPY_AF_INET6, ctx->protocol);
}
