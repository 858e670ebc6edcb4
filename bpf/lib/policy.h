/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Policy hooks (placeholder: everything is allowed).
 *
 * The programs already call these at the points where policy is enforced, with
 * everything the policy step needs: the endpoint, the identities involved, the
 * parsed packet (protocol, ports) and the conntrack verdict, so that replies
 * and established connections can skip rule lookups. The policy work replaces
 * the bodies with lookups in per-endpoint policy maps (identity, port,
 * protocol, direction) -> allow | redirect-to-proxy.
 *
 * Return value: POLICY_ALLOW, POLICY_DENY, or (later) a proxy port > 0.
 */
#ifndef CPY_POLICY_H
#define CPY_POLICY_H

#include "lib/common.h"
#include "lib/conntrack.h"

#define POLICY_ALLOW 0
#define POLICY_DENY -1

/* May the endpoint @ep_id (identity @src_identity) send this packet out? */
static __always_inline int policy_can_egress(__u32 ep_id, __u32 src_identity,
					     const struct pkt_info *pkt, int ct_state)
{
	return POLICY_ALLOW;
}

/*
 * May this packet enter endpoint @ep_id (identity @dst_identity)? Called on
 * to_container for traffic from the host stack and, for local delivery, by
 * the sender's from_container just before the redirect (redirected packets do
 * not pass the destination's to_container).
 */
static __always_inline int policy_can_ingress(__u32 ep_id, __u32 dst_identity,
					      __u32 src_identity,
					      const struct pkt_info *pkt, int ct_state)
{
	return POLICY_ALLOW;
}

#endif /* CPY_POLICY_H */
