/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Forwarding counters, per CPU so that no packet pays for an atomic add. They
 * show which path traffic took: e.g. direct delivery between local endpoints
 * must bypass the host stack entirely.
 */
#ifndef CPY_METRICS_H
#define CPY_METRICS_H

#include "lib/common.h"

#define METRIC_FROM_EP_TO_STACK 0	/* from_container: handed to the host stack */
#define METRIC_FROM_EP_LOCAL 1		/* from_container: redirected to a local endpoint */
#define METRIC_TO_EP_FROM_STACK 2	/* to_container: delivered from the host stack */
#define METRIC_CT_CREATED 3		/* new conntrack entries */
/* 4-7 left for the endpoint programs; the overlay counts from 8. */
#define METRIC_FROM_EP_OVERLAY 8	/* from_container: sent into the overlay */
#define METRIC_FROM_OVERLAY 9		/* from_overlay: delivered to a local endpoint */

struct metric_value {
	__u64 packets;
	__u64 bytes;
};

CPY_PINNED_MAP("percpu_array", __u32, struct metric_value, cpy_metrics, METRIC_MAX);

static __always_inline void metric_count(__u32 slot, __u32 len)
{
	struct metric_value *m = cpy_metrics.lookup(&slot);

	if (m) {
		m->packets += 1;
		m->bytes += len;
	}
}

#endif /* CPY_METRICS_H */
