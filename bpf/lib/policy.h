/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Identity-based L3/L4 policy, checked for every packet in a connection's
 * original direction (new and established), so that removing an allow stops
 * established connections too; replies and related ICMP errors pass on
 * conntrack alone (lib/conntrack.h).
 *
 * One pinned hash, cpy_policy, holds every endpoint's resolved policy:
 *
 *   {ep_id, identity, dport (network order), protocol, direction}
 *       -> {proxy_port (host order), action}
 *
 * identity, dport and protocol 0 mean "any" (protocol any = TCP and UDP).
 * The agent writes entries closed under intersection (cilium_py.policy.
 * resolve), so taking the first hit in the order
 *
 *   (id, port, proto) (id, port, ANY) (id, 0, ANY)
 *   (0,  port, proto) (0,  port, ANY) (0,  0, ANY)
 *
 * gives the union of every rule that applies. Packets without ports (ICMP,
 * other protocols) can only hit the two port-less keys:
 * once an endpoint's policy has only L4 entries, a ping to it is denied,
 * while ICMP errors and echo replies of allowed connections pass as
 * conntrack RELATED/REPLY.
 *
 * The cost does not grow with the number of rules: at most six hash lookups
 * per packet, and only for the key shapes the endpoint's entries use
 * (its flags word carries one bit per shape and direction, lib/endpoints.h),
 * so an L3-only or an L4-only policy costs a single lookup.
 */
#ifndef CPY_POLICY_H
#define CPY_POLICY_H

#include "lib/common.h"
#include "lib/endpoints.h"
#include "lib/l4.h"

/* Same numbering as the conntrack directions. */
#define POLICY_EGRESS 0
#define POLICY_INGRESS 1

#define POLICY_ACTION_ALLOW 1
#define POLICY_ACTION_REDIRECT 2	/* to the L7 proxy at proxy_port (lib/proxy.h) */

#define POLICY_DENY -1

#define POLICY_SHAPE_ID_PORT_PROTO 0x01
#define POLICY_SHAPE_ID_PORT 0x02
#define POLICY_SHAPE_ID 0x04
#define POLICY_SHAPE_PORT_PROTO 0x08
#define POLICY_SHAPE_PORT 0x10
#define POLICY_SHAPE_ANY 0x20
#define POLICY_SHAPES_MASK 0x3f

struct policy_key {
	__u32 ep_id;
	__u32 identity;		/* remote identity, 0: any */
	__be16 dport;		/* network byte order, 0: any */
	__u8 protocol;		/* IPPROTO_*, 0: any */
	__u8 direction;		/* POLICY_EGRESS / POLICY_INGRESS */
};

struct policy_value {
	__u16 proxy_port;	/* host byte order; 0 unless action is redirect */
	__u8 action;		/* POLICY_ACTION_* */
	__u8 pad;
};

CPY_PINNED_MAP("hash", struct policy_key, struct policy_value, cpy_policy, POLICY_MAP_SIZE);

static __always_inline struct policy_value *policy_try(struct policy_key *key, __u32 identity,
						       __be16 dport, __u8 protocol)
{
	key->identity = identity;
	key->dport = dport;
	key->protocol = protocol;
	return cpy_policy.lookup(key);
}

/*
 * May a new connection described by @pkt pass endpoint @ep_id (flags word
 * @ep_flags) in @dir, with @remote the identity at the other end? Returns
 * POLICY_DENY, or the proxy port (0: plain allow).
 */
static __always_inline int policy_check(__u32 ep_id, __u32 ep_flags, __u32 remote,
					const struct pkt_info *pkt, __u8 dir)
{
	struct policy_key key = {};
	struct policy_value *v = 0;
	__u32 shapes;
	int ports;

	if (dir == POLICY_INGRESS) {
		if (!(ep_flags & EP_F_INGRESS_ENFORCED))
			return 0;
		shapes = (ep_flags >> EP_SHAPES_INGRESS_SHIFT) & POLICY_SHAPES_MASK;
	} else {
		if (!(ep_flags & EP_F_EGRESS_ENFORCED))
			return 0;
		shapes = (ep_flags >> EP_SHAPES_EGRESS_SHIFT) & POLICY_SHAPES_MASK;
	}
	key.ep_id = ep_id;
	key.direction = dir;
	/* Every fragment has its datagram's ports (lib/ipfrag.h). */
	ports = pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP;

	if (ports && (shapes & POLICY_SHAPE_ID_PORT_PROTO))
		v = policy_try(&key, remote, pkt->dport, pkt->proto);
	if (!v && ports && (shapes & POLICY_SHAPE_ID_PORT))
		v = policy_try(&key, remote, pkt->dport, 0);
	if (!v && (shapes & POLICY_SHAPE_ID))
		v = policy_try(&key, remote, 0, 0);
	if (!v && ports && (shapes & POLICY_SHAPE_PORT_PROTO))
		v = policy_try(&key, 0, pkt->dport, pkt->proto);
	if (!v && ports && (shapes & POLICY_SHAPE_PORT))
		v = policy_try(&key, 0, pkt->dport, 0);
	if (!v && (shapes & POLICY_SHAPE_ANY))
		v = policy_try(&key, 0, 0, 0);
	if (!v)
		return POLICY_DENY;
	if (v->action != POLICY_ACTION_REDIRECT)
		return 0;
	/* A redirect without a proxy port cannot be enforced: deny. */
	return v->proxy_port ? v->proxy_port : POLICY_DENY;
}

#endif /* CPY_POLICY_H */
