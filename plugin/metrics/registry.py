"""The agent's metrics: one registry per agent, state read at scrape time.

Two kinds of metric live here. Counters and histograms of work done (regenerations,
policy imports, API requests, conntrack GC runs, proxy requests) are updated by the code
doing the work through ``AgentMetrics``' methods. Everything that is state (endpoints
by state, identities, the policy revision, the datapath's per-CPU counters, conntrack
entries, cluster nodes) is read when Prometheus scrapes, by ``StateCollector``: no
thread polls the kernel, and a scrape always sees the current numbers.

``NullMetrics`` is the same surface doing nothing, for agents built without a metrics
server (unit tests, ``--prometheus-serve-addr`` off): callers never check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..logs import get_logger

log = get_logger("metrics")

NS = "cilium_py"

# Datapath forwarding counters (bpf/lib/metrics.h) by the direction they count.
_PATH_DIRECTION = {
    "from-endpoint-to-stack": "egress",
    "from-endpoint-local-delivery": "egress",
    "from-endpoint-overlay": "egress",
    "to-endpoint-from-stack": "ingress",
    "from-overlay-local-delivery": "ingress",
}

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0)


class NullMetrics:
    """The metrics surface, doing nothing."""

    registry: CollectorRegistry | None = None

    def regeneration(self, seconds: float, ok: bool) -> None: ...
    def policy_import(self, seconds: float) -> None: ...
    def api_request(self, route: str, method: str, status: int, seconds: float) -> None: ...
    def conntrack_gc(self, deleted: int) -> None: ...
    def proxy_request(self, protocol: str, verdict: str) -> None: ...
    def health_probe(self, target: str, kind: str, ok: bool, seconds: float | None) -> None: ...


class AgentMetrics(NullMetrics):
    def __init__(self, agent: Any) -> None:
        disable_created_metrics()  # no *_created series: noise for every counter
        self.registry = CollectorRegistry()
        ProcessCollector(namespace=NS, registry=self.registry)
        r = self.registry
        self._regen = Histogram(f"{NS}_endpoint_regeneration_seconds",
                                "Time to compute and write one endpoint's policy",
                                buckets=_FAST_BUCKETS, registry=r)
        self._regen_fail = Counter(f"{NS}_endpoint_regeneration_failures",
                                   "Endpoint regenerations that failed (endpoint left denying)",
                                   registry=r)
        self._import = Histogram(f"{NS}_policy_import_seconds",
                                 "Time from a policy import request to its rules stored",
                                 buckets=_FAST_BUCKETS, registry=r)
        self._api = Counter(f"{NS}_api_requests", "REST API requests",
                            ["route", "method", "status"], registry=r)
        self._api_time = Histogram(f"{NS}_api_request_duration_seconds",
                                   "REST API request handling time", ["route", "method"],
                                   buckets=_FAST_BUCKETS, registry=r)
        self._ct_gc = Counter(f"{NS}_conntrack_gc_runs", "Conntrack garbage collection runs",
                              registry=r)
        self._ct_gc_deleted = Counter(f"{NS}_conntrack_gc_deleted_entries",
                                      "Expired conntrack entries removed by the agent",
                                      registry=r)
        self._proxy = Counter(f"{NS}_proxy_requests", "L7 requests seen by the proxies",
                              ["protocol", "verdict"], registry=r)
        self._probe = Counter(f"{NS}_health_probes", "Connectivity probes by result",
                              ["target", "kind", "result"], registry=r)
        self._probe_time = Histogram(f"{NS}_health_probe_seconds", "Connectivity probe latency",
                                     ["kind"], buckets=_FAST_BUCKETS, registry=r)
        r.register(StateCollector(agent))
        self._lock = threading.Lock()

    def regeneration(self, seconds: float, ok: bool) -> None:
        self._regen.observe(seconds)
        if not ok:
            self._regen_fail.inc()

    def policy_import(self, seconds: float) -> None:
        self._import.observe(seconds)

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._api.labels(route, method, str(status)).inc()
        self._api_time.labels(route, method).observe(seconds)

    def conntrack_gc(self, deleted: int) -> None:
        self._ct_gc.inc()
        self._ct_gc_deleted.inc(deleted)

    def proxy_request(self, protocol: str, verdict: str) -> None:
        self._proxy.labels(protocol, verdict).inc()

    def health_probe(self, target: str, kind: str, ok: bool, seconds: float | None) -> None:
        self._probe.labels(target, kind, "ok" if ok else "failed").inc()
        if ok and seconds is not None:
            self._probe_time.labels(kind).observe(seconds)


class StateCollector(Collector):
    """Reads the agent's state and the datapath's counters when scraped."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        agent = self.agent
        try:
            yield from self._endpoints(agent)
            yield from self._policy(agent)
            if agent.datapath is not None and agent.node_started:
                yield from self._datapath(agent.datapath)
            if getattr(agent, "cluster", None) is not None:
                yield from self._cluster(agent.cluster)
            proxies = getattr(agent, "proxies", None)
            if proxies is not None and hasattr(proxies, "stats"):
                yield from self._proxies(proxies.stats())
            services = getattr(agent, "services", None)
            if services is not None and hasattr(services, "metrics"):
                yield from services.metrics()
        except Exception:  # noqa: BLE001 - a scrape must answer; the log says what broke
            log.exception("collecting metrics failed")

    @staticmethod
    def _endpoints(agent: Any) -> Iterator[Any]:
        by_state: dict[str, int] = {}
        for ep in agent.endpoints.list():
            by_state[ep.state] = by_state.get(ep.state, 0) + 1
        g = GaugeMetricFamily(f"{NS}_endpoints", "Endpoints by state", labels=["state"])
        for state in sorted({"ready", "not-ready", *by_state}):
            g.add_metric([state], by_state.get(state, 0))
        yield g

    @staticmethod
    def _policy(agent: Any) -> Iterator[Any]:
        yield GaugeMetricFamily(f"{NS}_policy_revision", "Policy revision in force",
                                value=agent.policy.repo.revision)
        yield GaugeMetricFamily(f"{NS}_policy_rules", "Policy rules imported",
                                value=len(agent.policy.repo))
        ids = agent.identities.all()
        g = GaugeMetricFamily(f"{NS}_identities", "Identities known, by kind", labels=["kind"])
        user = [i for i in ids if i >= 256]
        g.add_metric(["reserved"], len(ids) - len(user))
        g.add_metric(["allocated"], len(user))
        yield g

    @staticmethod
    def _datapath(datapath: Any) -> Iterator[Any]:
        fwd_p = CounterMetricFamily(f"{NS}_forward_packets", "Packets forwarded by the "
                                    "datapath", labels=["direction", "path"])
        fwd_b = CounterMetricFamily(f"{NS}_forward_bytes", "Bytes forwarded by the datapath",
                                    labels=["direction", "path"])
        for path, counts in sorted(datapath.metrics().items()):
            direction = _PATH_DIRECTION.get(path)
            if direction is None:
                continue
            fwd_p.add_metric([direction, path], counts["packets"])
            fwd_b.add_metric([direction, path], counts["bytes"])
        yield fwd_p
        yield fwd_b
        drops = datapath.drop_counters_detail() if hasattr(
            datapath, "drop_counters_detail") else None
        drop_p = CounterMetricFamily(f"{NS}_drop_packets", "Packets dropped by the datapath",
                                     labels=["direction", "reason"])
        drop_b = CounterMetricFamily(f"{NS}_drop_bytes", "Bytes dropped by the datapath",
                                     labels=["direction", "reason"])
        if drops is None:
            drops = [{"direction": "any", "reason": r, "packets": n, "bytes": 0}
                     for r, n in datapath.drop_counters().items()]
        for row in drops:
            drop_p.add_metric([row["direction"], row["reason"]], row["packets"])
            drop_b.add_metric([row["direction"], row["reason"]], row["bytes"])
        yield drop_p
        yield drop_b
        ct = GaugeMetricFamily(f"{NS}_conntrack_entries", "Conntrack entries by family",
                               labels=["family"])
        counts = {"ipv4": 0, "ipv6": 0}
        for row in datapath.ct_entries():
            counts[row["family"]] = counts.get(row["family"], 0) + 1
        for fam, n in counts.items():
            ct.add_metric([fam], n)
        yield ct

    @staticmethod
    def _proxies(stats: list[dict[str, Any]]) -> Iterator[Any]:
        up = GaugeMetricFamily(f"{NS}_proxy_up", "1 while the proxy runs", labels=["proxy"])
        restarts = CounterMetricFamily(f"{NS}_proxy_restarts",
                                       "Proxy processes restarted by the agent",
                                       labels=["proxy"])
        for row in stats:
            up.add_metric([row["name"]], 1 if row["up"] else 0)
            restarts.add_metric([row["name"]], row["restarts"])
        yield up
        yield restarts

    @staticmethod
    def _cluster(cluster: Any) -> Iterator[Any]:
        st = cluster.status()
        yield GaugeMetricFamily(f"{NS}_cluster_nodes", "Nodes in the cluster view",
                                value=len(st.get("nodes", [])))
        yield GaugeMetricFamily(f"{NS}_cluster_store_up", "1 when etcd answers",
                                value=1 if st.get("connected") else 0)
        yield CounterMetricFamily(f"{NS}_cluster_store_outages",
                                  "Times etcd became unreachable", value=st.get("outages", 0))
