/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Reading packet headers without copying them.
 *
 * Headers almost always sit in the linear part of the skb (a container's TCP
 * stack puts them there), where the program may read them in place: no
 * helper call and no copy, which matters at a few nanoseconds per header on
 * every packet. When they do not (a header split across fragments, an
 * unusually deep IPv6 chain), pkt_ptr copies them with bpf_skb_load_bytes
 * into a buffer on the stack instead. Callers only ever read through the
 * returned pointer, so the verifier accepts both cases.
 *
 * Writes go through helpers (lib/eth.h): a direct write would make the
 * verifier unclone every cloned skb on entry, also those never written.
 */
#ifndef CPY_ACCESS_H
#define CPY_ACCESS_H

#include "lib/common.h"

/* Offsets beyond this are always copied (keeps the verifier's range small). */
#define PKT_DIRECT_MAX 256

/* @len bytes at @off: in place when linear, else copied to @buf; NULL if short. */
static __always_inline const void *pkt_ptr(struct __sk_buff *skb, __u32 off, __u32 len,
					   void *buf)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (off <= PKT_DIRECT_MAX) {
		void *p = data + off;

		if (p + len <= data_end)
			return p;
	}
	if (bpf_skb_load_bytes(skb, off, buf, len) < 0)
		return 0;
	return buf;
}

#endif /* CPY_ACCESS_H */
