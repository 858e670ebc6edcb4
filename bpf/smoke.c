/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Toolchain smoke test: the smallest tc classifier that proves bcc can compile
 * a program, the kernel accepts it as SCHED_CLS, and pyroute2 can attach it to
 * clsact in direct-action mode. It counts packets and bytes and never changes
 * a packet's fate.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

struct smoke_count {
	__u64 packets;
	__u64 bytes;
};

/* One slot: a per-CPU array needs no atomics and the reader sums the CPUs. */
BPF_PERCPU_ARRAY(smoke_counter, struct smoke_count, 1);

int smoke_count(struct __sk_buff *skb)
{
	__u32 slot = 0;
	struct smoke_count *count = smoke_counter.lookup(&slot);

	if (count) {
		count->packets += 1;
		count->bytes += skb->len;
	}
	return TC_ACT_OK;
}
