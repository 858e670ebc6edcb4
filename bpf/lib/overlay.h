/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The overlay between nodes: a VXLAN device in metadata ("external") mode
 * whose tunnel key carries the SOURCE IDENTITY of every packet.
 *
 *   sending node     from_container: the destination lies in another node's
 *                    endpoint range (cpy_tunnel, LPM by prefix) -> set the
 *                    tunnel key {remote = that node, id = sender's identity}
 *                    and redirect to the VXLAN device, which encapsulates.
 *   receiving node   from_overlay on the VXLAN device's tc ingress: the VNI is
 *                    the sender's identity; conntrack and the destination's
 *                    ingress policy are applied with it, then the packet is
 *                    delivered straight into the destination container.
 *
 * So a node enforces policy on the identity the sending node vouched for, not
 * on addresses. The nodes trust each other (as Cilium's do): the fabric
 * between them must not be reachable by endpoints, which it is not, because
 * endpoints' packets leave only through their own from_container program.
 *
 * cpy_node holds node-wide settings (the VXLAN device's ifindex). When it is
 * 0, or no range matches, packets take the host stack as before (direct
 * routing mode: the node routes per node range and the receiver learns the
 * sender's identity from the ipcache, which the agent keeps for every
 * endpoint of the cluster).
 */
#ifndef CPY_OVERLAY_H
#define CPY_OVERLAY_H

#include "lib/common.h"
#include "lib/ipcache.h"

#ifndef TUNNEL_MAP_SIZE
#define TUNNEL_MAP_SIZE 1024
#endif

struct tunnel_value {
	__u8 node_addr[16];	/* the remote node's tunnel address; IPv4 in the first 4 */
	__u8 family;		/* CPY_AF_INET / CPY_AF_INET6 of node_addr */
	__u8 pad[3];
};

struct node_config {
	__u32 tunnel_ifindex;	/* the VXLAN device; 0: no overlay */
	__u32 flags;		/* reserved */
};

CPY_PINNED_MAP_F("lpm_trie", struct ipcache_key, struct tunnel_value, cpy_tunnel,
		 TUNNEL_MAP_SIZE, BPF_F_NO_PREALLOC);
CPY_PINNED_MAP("array", __u32, struct node_config, cpy_node, 1);

static __always_inline struct tunnel_value *tunnel_lookup(const struct pkt_info *pkt)
{
	struct ipcache_key key = {};

	key.family = pkt->family;
	if (pkt->family == CPY_AF_INET) {
		key.prefixlen = IPCACHE_PREFIX_BASE + 32;
		*(__u32 *)key.addr = *(const __u32 *)pkt->daddr;
	} else {
		key.prefixlen = IPCACHE_PREFIX_BASE + 128;
		addr6_copy(key.addr, pkt->daddr);
	}
	return cpy_tunnel.lookup(&key);
}

/*
 * Send @pkt (leaving an endpoint of identity @identity) into the overlay when
 * its destination belongs to another node. Returns the verdict, or -1 when the
 * packet is not for the overlay (the caller hands it to the host stack).
 */
static __always_inline int overlay_send(struct __sk_buff *skb, const struct pkt_info *pkt,
					__u32 identity)
{
	struct bpf_tunnel_key key = {};
	struct tunnel_value *t;
	struct node_config *node;
	__u32 zero = 0;
	__u64 flags = 0;

	node = cpy_node.lookup(&zero);
	if (!node || !node->tunnel_ifindex)
		return -1;
	t = tunnel_lookup(pkt);
	if (!t)
		return -1;
	key.tunnel_id = identity;
	key.tunnel_ttl = 64;
	if (t->family == CPY_AF_INET) {
		key.remote_ipv4 = cpy_ntohl(*(__u32 *)t->node_addr);	/* host order */
	} else {
		__builtin_memcpy(key.remote_ipv6, t->node_addr, 16);
		flags = BPF_F_TUNINFO_IPV6;
	}
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags) < 0)
		return -2;
	metric_count(METRIC_FROM_EP_OVERLAY, skb->len);
	return bpf_redirect(node->tunnel_ifindex, 0);
}

/* The identity the sending node put in the tunnel key; 0 when there is none. */
static __always_inline __u32 overlay_source_identity(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0 &&
	    bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) < 0)
		return 0;
	return key.tunnel_id;
}

#endif /* CPY_OVERLAY_H */
