"""The agent: the one owner of state on a host.

It holds the store and, as later subsystems land, the IPAM, endpoint manager, identity
allocator, policy repository and datapath. API handlers only call methods here; nothing
else in the process writes the store or the kernel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import AgentConfig
from ..datapath.contract import DatapathContract
from ..endpoint import plumbing
from ..endpoint.manager import EndpointManager
from ..endpoint.masquerade import Masquerade
from ..identity import IdentityAllocator
from ..ipam import IPAM
from ..logs import get_logger
from ..metrics import AgentMetrics, NullMetrics
from ..monitor.hub import EventHub
from ..node.cluster import ClusterNode, is_cluster_store
from ..proxy.manager import ProxyManager
from ..service import ServiceManager
from ..store import EtcdTLS, Store, open_store
from . import prereqs
from .policy_manager import PolicyManager

log = get_logger("agent")

HealthProbe = Callable[[], dict[str, Any]]


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        store: Store | None = None,
        datapath: DatapathContract | None = None,
    ) -> None:
        self.config = config
        self.started = time.monotonic()
        self.store = store or open_store(config.store, config.state_dir, EtcdTLS(
            config.etcd_ca_file, config.etcd_cert_file, config.etcd_key_file))
        self._probes: dict[str, HealthProbe] = {}
        self.register_probe("store", self._store_health)
        self.register_probe("datapath-prerequisites", self._prereq_health)
        # In a cluster (etcd) identities and policy are shared; the node's endpoints and
        # addresses (from its own ranges) stay in its embedded store.
        self.cluster: ClusterNode | None = None
        node_store, ipv4_pool, ipv6_pool = self.store, config.ipv4_pool, config.ipv6_pool
        if is_cluster_store(self.store):
            self.local_store = open_store(None, config.state_dir)
            self.cluster = ClusterNode(self.store, config, self.local_store)
            node_store = self.cluster.node_store
            ipv4_pool, ipv6_pool = self.cluster.ipv4_range, self.cluster.ipv6_range
            self.register_probe("cluster", self._cluster_health)
        self.ipam = IPAM(node_store, ipv4_pool, ipv6_pool)
        self.identities = IdentityAllocator(
            self.store, node=self.cluster.name if self.cluster else None,
            lease=(lambda: self.cluster.lease if self.cluster else None),
        )
        # Typed by its contract: what the agent may call is listed in datapath/contract.py.
        self.datapath: DatapathContract | None = datapath
        self.masquerade: Masquerade | None = None
        self.endpoints = EndpointManager(
            node_store, self.ipam, self.identities, datapath, on_change=self._endpoint_changed
        )
        self.services = ServiceManager(node_store, datapath, self._reserved_service_addresses)
        if config.kubeconfig:
            from ..k8s.pods import PodLabels, pod_of

            pods = PodLabels.from_kubeconfig(config.kubeconfig)

            def pod_labels(labels: list[str], req: dict[str, Any]) -> list[str]:
                named = pod_of(labels, req.get("container_name") or "")
                return pods.labels(*named) if named else []

            self.endpoints.label_sources.append(pod_labels)
        self.metrics: NullMetrics = (
            AgentMetrics(self) if config.prometheus_serve_addr else NullMetrics())
        self._metrics_server: Any = None
        self.events = EventHub()
        self._endpoint_addresses: dict[str, str] = {}
        self.identities.on_allocate = lambda number, labels: self._agent_event(
            "identity-allocated", identity=number, labels=labels)
        self.proxies = ProxyManager(
            self.store, config.state_dir, pools=(config.ipv4_pool, config.ipv6_pool),
            publish=self.events.publish, envoy=None if config.l7_proxy else False)
        if config.kafka_proxy:
            from ..proxy.kafka.agent import KafkaAgentProxy

            self.proxies.register("kafka", KafkaAgentProxy(
                {d: self.proxies.proxy_port("kafka", d) for d in ("ingress", "egress")},
                self.proxies.pool_prefixes, self.proxies.record,
                families=[f for f in (4, 6) if self.ipam.enabled(f)]))
        self.register_probe("proxy", self.proxies.health)
        self.policy = PolicyManager(self)
        # Attach closes a new endpoint, then writes its policy through this (failures
        # are the attach's, never swallowed).
        self.endpoints.policy = self.policy
        self.register_probe("datapath", self._datapath_health)
        self.register_probe("endpoints", self._endpoints_health)
        self.register_probe("policy", self._policy_health)
        self.register_probe("socket-lb", self._socket_lb_health)
        self.socket_lb_error: str | None = None
        self.node_started = False
        self._stopping = threading.Event()

    def _endpoint_changed(self, ep: Any, event: str) -> None:
        """Events and address index for every change; a deleted endpoint's entries
        go. (A new or relabelled endpoint's policy is written by the attach itself,
        through ``PolicyManager.enforce``, whose failure the caller sees.)"""
        self._index_addresses()
        self._agent_event({"labels": "endpoint-labels-changed"}.get(event, f"endpoint-{event}"),
                          endpoint=ep.id, identity=ep.identity, labels=list(ep.labels))
        if not self.node_started or event != "deleted":
            return
        self.policy.retry.clear(ep.id)
        self.policy.forget(ep.id)
        self.policy.endpoint_ipcache_changed(ep, gone=True)
        if self.cluster is not None:
            self.cluster.withdraw(list(self.policy.endpoint_ipcache(ep)))

    def _reserved_service_addresses(self) -> list[tuple[str, str]]:
        """Addresses a service frontend may not take: the router's and every endpoint's."""
        out = [(str(self.ipam.router(f)), "the router") for f in (4, 6) if self.ipam.enabled(f)]
        for ep in self.endpoints.list():
            out += [(addr, f"endpoint {ep.id}") for addr in ep.addressing.values() if addr]
        return out

    def _on_drop(self, event: dict[str, Any]) -> None:
        """Datapath events (drops, traces, verdicts) named by endpoint, then fanned out."""
        ep = self.endpoints.by_ifindex(event.get("ifindex", 0))
        if ep is not None:
            event["endpoint"] = ep.id
            if event.get("type") == "drops-suppressed":
                event["identity"] = ep.identity
        by_addr = self._endpoint_addresses
        for side, key in (("source", "src"), ("destination", "dst")):
            name = by_addr.get(event.get(key) or "")
            if name is not None:
                event[f"{side}-endpoint"] = name
        self.events.publish(event)

    def _gate_trace_events(self, wanted: frozenset[str]) -> None:
        """The datapath emits trace and policy-verdict events only while a monitor
        reader wants them (bpf/lib/trace.h): a reader coming or going flips the gate."""
        from ..datapath.trace_events import gate_bits

        if self.datapath is None:
            return
        try:
            self.datapath.set_trace_events(gate_bits(wanted))
        except Exception:  # noqa: BLE001 - the monitor must not break the API call
            log.exception("could not switch datapath trace events")

    def _agent_event(self, message: str, **fields: Any) -> None:
        """Lifecycle events for ``cilium-py monitor --type agent``."""
        self.events.publish({"type": "agent", "message": message, **fields})

    def _index_addresses(self) -> None:
        self._endpoint_addresses = {
            addr: ep.id for ep in self.endpoints.list()
            for addr in ep.addressing.values() if addr}

    def start_node(self) -> None:
        """Take over the node: router device, masquerade, datapath, restored endpoints.

        Kept out of ``__init__`` so API unit tests can build an Agent without touching
        the kernel.
        """
        cfg = self.config
        router = plumbing.ensure_router_device(
            cfg.router_device,
            str(self.ipam.router(4)) if self.ipam.enabled(4) else None,
            str(self.ipam.router(6)) if self.ipam.enabled(6) else None,
            str(self.ipam.pool(4)) if self.ipam.enabled(4) else None,
            str(self.ipam.pool(6)) if self.ipam.enabled(6) else None,
        )
        log.info("router device ready", extra={"fields": router})
        if cfg.masquerade:
            self.masquerade = Masquerade(ipv4_pool=cfg.ipv4_pool, ipv6_pool=cfg.ipv6_pool)
            self.masquerade.install()
        if self.datapath is not None:
            # L7 first: a proxy the previous agent configured is back (or adopted)
            # before the slow compile, so redirected flows wait for nobody.
            if self.proxies.parsers():
                from ..proxy.routing import install_proxy_routing

                install_proxy_routing(self.ipam.enabled(4), self.ipam.enabled(6))
                self.proxies.resume()
            self.datapath.start()
            self._start_socket_lb()
            self.datapath.subscribe_drops(self._on_drop)
            self.events.on_wanted_change.append(self._gate_trace_events)
            self._gate_trace_events(self.events.wanted())
        self.policy.load()
        if self.cluster is not None:
            self.policy.refresh_node_addresses()
            self.cluster.start(
                self.datapath, self.policy.sync_ipcache, self._cluster_identities_changed,
                self._cluster_policy_changed, lambda _lease: self.identities.rebind(),
                self.policy._node_addrs,
            )
            self.endpoints.mtu = self.cluster.endpoint_mtu
        summary = self.endpoints.restore()
        self._index_addresses()
        if self.datapath is not None:
            keep = {ep.ifindex for ep in self.endpoints.list()}
            summary["map-entries-removed"] = self.datapath.flush_orphans(keep)
        log.info("endpoints restored", extra={"fields": summary})
        if self.datapath is not None:
            log.info("services restored", extra={"fields": self.services.restore()})
        self.policy.regenerate_all()
        if self.cluster is not None:
            entries: dict[str, int] = {}
            for ep in self.endpoints.list():
                entries.update(self.policy.endpoint_ipcache(ep))
            self.cluster.publish(entries)
        self.node_started = True
        self.policy.retry.start()
        self._start_metrics_server()
        self._start_health()
        self._start_docker_labels()
        self._maintenance = threading.Thread(
            target=self._maintain, name="cpy-maintenance", daemon=True
        )
        self._maintenance.start()
        threading.Thread(target=self._watch_namespaces, name="cpy-netns-watch",
                         daemon=True).start()
        if self.datapath is not None:
            from ..datapath.ctgc import ConntrackGC

            self.ct_gc = ConntrackGC(self.datapath, self.config.conntrack_gc_interval,
                                     self.metrics.conntrack_gc, self._stopping)
            self.ct_gc.start()

    def _start_socket_lb(self) -> None:
        """Balance the node's own sockets (datapath/socklb.py), or stop doing so when
        turned off. With ``auto`` a failure is logged and shown by the ``socket-lb``
        probe, and the agent runs on (endpoints are balanced in from_container
        regardless); a cgroup named explicitly is a demand, and its failure stops the
        start."""
        from ..datapath.loader import DatapathError
        from ..datapath.socklb import resolve_cgroup

        assert self.datapath is not None
        setting = self.config.socket_lb_cgroup
        try:
            cgroup = resolve_cgroup(setting)
            if cgroup is None:
                if self.datapath.detach_socket_lb():
                    log.info("socket LB turned off: detached the previous agent's programs")
                return
            result = self.datapath.attach_socket_lb(cgroup)
        except DatapathError as exc:
            if setting != "auto":
                raise
            self.socket_lb_error = str(exc)
            log.error("socket LB not attached; host processes do not reach services",
                      extra={"fields": {"error": str(exc)}})
            return
        log.info("socket LB attached", extra={"fields": result})

    def _start_health(self) -> None:
        self.health_monitor = None
        if not self.config.health_checking:
            return
        from ..health import HealthMonitor

        self.health_monitor = HealthMonitor(self, interval=self.config.health_interval)
        self.health_monitor.start()
        if self.cluster is not None:
            self.cluster.set_health_addresses(self.health_monitor.addresses)

    def _start_metrics_server(self) -> None:
        """/metrics for Prometheus on --prometheus-serve-addr (HOST:PORT, [v6]:PORT)."""
        addr = self.config.prometheus_serve_addr
        if not addr or self.metrics.registry is None:
            return
        from prometheus_client import start_http_server

        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        self._metrics_server, _ = start_http_server(int(port), host,
                                                    registry=self.metrics.registry)
        log.info("serving metrics", extra={"fields": {"address": addr}})

    def _start_docker_labels(self) -> None:
        """Learn container labels from dockerd (Docker never tells a network driver a
        container's labels). Started whether or not dockerd runs yet: the watcher waits
        for its socket and re-syncs whenever dockerd (re)appears."""
        self.docker_labels = None
        sock = self.config.docker_socket
        if not self.config.docker_labels:
            return
        from ..docker.labels import DockerLabelWatcher

        def endpoints_of(container_id: str) -> list[str]:
            return [ep.id for ep in self.endpoints.list()
                    if ep.container_id and container_id.startswith(ep.container_id)]

        self.docker_labels = DockerLabelWatcher(
            self.endpoints.set_labels, set_container=self.endpoints.set_container,
            endpoints_of_container=endpoints_of, docker_url=f"unix://{sock}",
        )
        self.docker_labels.start()
        log.info("learning container labels from dockerd", extra={"fields": {"socket": sock}})

    def _watch_namespaces(self, interval: float = 2.0) -> None:
        """Notice within seconds an endpoint whose namespace vanished without a DEL."""
        while not self._stopping.wait(interval):
            try:
                self.endpoints.release_vanished()
            except Exception:  # noqa: BLE001 - logged; the next pass tries again
                log.exception("namespace watch pass failed")

    def _maintain(self, interval: float = 30.0) -> None:
        """Periodic upkeep: release unused identities (conntrack has its own collector,
        datapath/ctgc.py)."""
        while not self._stopping.wait(interval):
            try:
                if self.identities.collect_garbage():
                    self.policy.identity_changed()
            except Exception:  # noqa: BLE001 - upkeep must not kill the agent
                log.exception("maintenance pass failed")

    def _cluster_identities_changed(self) -> None:
        """An identity was allocated or freed, possibly on another node."""
        self.policy.identity_changed()
        self.policy.regenerate_all()

    def _cluster_policy_changed(self) -> None:
        """Rules changed in the shared store: take them up if another node wrote them."""
        if self.policy.reload_if_newer():
            self.policy.regenerate_all()

    def _cluster_health(self) -> dict[str, Any]:
        if self.cluster is None or self.cluster.registry is None:
            return {"status": "degraded", "message": "not joined yet"}
        st = self.cluster.status()
        others = [n for n in st.get("nodes", []) if n["name"] != self.cluster.name]
        if not st.get("connected"):
            return {"status": "degraded", "details": st,
                    "message": f"etcd unreachable ({st.get('last-error')}); enforcing the "
                               f"last known state of {len(others)} other nodes"}
        return {"status": "ok", "details": st,
                "message": f"node {self.cluster.name} ({st['mode']}), {len(others)} other "
                           f"nodes, {st['remote-endpoints']} remote endpoints"}

    def register_probe(self, name: str, probe: HealthProbe) -> None:
        """Subsystems add themselves to /v1/healthz as they come up."""
        self._probes[name] = probe

    def _store_health(self) -> dict[str, Any]:
        try:
            details = self.store.status()
        except Exception as exc:  # noqa: BLE001 - health must report, not raise
            if self.cluster is not None:
                # The node runs on with the last known cluster state (see "cluster").
                return {"status": "degraded", "message": f"cluster store unreachable: {exc}"}
            return {"status": "failure", "message": f"store unreachable: {exc}"}
        return {"status": "ok", "message": "store reachable", "details": details}

    def _prereq_health(self) -> dict[str, Any]:
        checks = [
            prereqs.check_bpffs(self.config.bpf_root),
            prereqs.check_bcc(),
            prereqs.check_kernel_headers(),
        ]
        failing = [c for c in checks if not c.ok]
        return {
            "status": "failure" if failing else "ok",
            "message": "; ".join(c.message for c in failing) or "all prerequisites met",
            "details": {c.name: c.to_dict() for c in checks},
        }

    def _datapath_health(self) -> dict[str, Any]:
        if self.datapath is None:
            return {"status": "failure", "message": "BPF datapath not available"}
        if not self.node_started:
            return {"status": "degraded", "message": "starting"}
        return {
            "status": "ok",
            "message": f"programs loaded (compiled in {self.datapath.compile_seconds:.2f} s), "
                       f"maps pinned under {self.config.bpf_root}",
            "details": {"programs": self.datapath.prog_ids},
        }

    def _endpoints_health(self) -> dict[str, Any]:
        eps = self.endpoints.list()
        not_ready = [e for e in eps if e.state != "ready"]
        # Deleted endpoints whose veth the reaper has not removed yet: a number that
        # stays up means veth deletion is stuck in the kernel.
        removing = self.endpoints.reaper.pending()
        failing = [e for e in not_ready if e.state_reason]
        message = f"{len(eps)} endpoints, {len(eps) - len(not_ready)} ready"
        if failing:
            first = failing[0]
            message += (f"; {len(failing)} not ready and denying all traffic (endpoint "
                        f"{first.id}: {first.state_reason})")
        if removing:
            message += f", {removing} deleted ones being removed"
        return {
            "status": "degraded" if not_ready else "ok",
            "message": message,
            "details": {"not-ready": [e.id for e in not_ready[:20]],
                        "reasons": {e.id: e.state_reason for e in failing[:20]},
                        "retrying": self.policy.retry.pending(),
                        "being-removed": removing},
        }

    def _socket_lb_health(self) -> dict[str, Any]:
        if self.datapath is None or not self.node_started:
            return {"status": "ok", "message": "not started"}
        if self.socket_lb_error is not None:
            return {"status": "degraded", "message": self.socket_lb_error}
        from ..datapath.socklb import HOOKS

        st = self.datapath.socket_lb_status()
        if st["cgroup"] is None:
            return {"status": "ok", "message": "disabled: host processes do not reach "
                                               "services", "details": st}
        if len(st["hooks"]) != len(HOOKS):
            return {"status": "degraded", "details": st,
                    "message": f"only {len(st['hooks'])} of {len(HOOKS)} socket hooks are "
                               f"attached to {st['cgroup']} (pins removed?)"}
        return {"status": "ok", "details": st,
                "message": f"host sockets balanced at connect/sendmsg for cgroup "
                           f"{st['cgroup']} ({len(st['hooks'])} hooks)"}

    def _policy_health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "message": f"revision {self.policy.repo.revision}, {len(self.policy.repo)} rules, "
                       f"enforcement {self.config.enforcement}",
        }

    def health(self) -> dict[str, Any]:
        subsystems = {name: probe() for name, probe in self._probes.items()}
        states = {s["status"] for s in subsystems.values()}
        overall = "failure" if "failure" in states else "degraded" if "degraded" in states else "ok"
        return {
            "status": overall,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "subsystems": subsystems,
        }

    def shutdown(self) -> None:
        """Stop serving; endpoints, programs, pinned maps and the masquerade and
        FORWARD rules all stay, so traffic keeps flowing while the agent restarts
        (``cilium-py-agent cleanup`` removes the rules once it is stopped for good).
        Nothing here touches what a newer agent could own: none can start while this
        process holds the state lock (lifetime.py)."""
        log.info("agent stopping")
        self._stopping.set()
        self.policy.retry.stop()
        watcher = getattr(self, "docker_labels", None)
        if watcher is not None:
            watcher.stop()
        # Deleted endpoints' veths and addresses still on their way out (reaper.py).
        if not self.endpoints.reaper.drain(timeout=10):
            log.warning("endpoint veths still being deleted at stop; start-up will sweep them")
        health_monitor = getattr(self, "health_monitor", None)
        if health_monitor is not None:
            health_monitor.stop()
        self.proxies.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self.cluster is not None:
            self.cluster.stop()
            self.local_store.close()
        if self.datapath is not None:
            self.datapath.close()
        self.store.close()
