"""The agent's policy loop: store the rules, resolve them per endpoint, write the maps.

The policy engine (``cilium_py.policy``) is pure; this module is its I/O edge. Rules are
persisted in the store so a restarted agent enforces the same policy; CIDR prefixes
named by rules get identities (labels ``cidr:<prefix>``) so the datapath can classify
outside addresses with one LPM lookup; every change bumps a revision, and
``wait(revision)`` returns once every endpoint runs it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from ..endpoint.manager import parse_labels
from ..errors import CiliumPyError, InvalidInput, NotFound, Unavailable
from ..labels import LabelSet, cidr_identity_labels
from ..labels.label import LabelError, parse_select_label
from ..logs import get_logger
from ..policy import (
    Direction,
    DirectionPolicy,
    EnforcementMode,
    IdentityIndex,
    PolicyValidationError,
    Repository,
    ResolvedPolicy,
    cidr_identity_prefixes,
    parse_policy,
    resolve_policy,
    trace_policy,
)
from ..policy.l4 import Protocol
from ..policy.l7 import HTTPRequest
from ..proxy.redirects import redirected_ports, with_proxy_ports
from ..store import Store
from .retry import RegenerationRetry

log = get_logger("policy")

# Fail closed: an endpoint whose labels are not known yet (reserved:init) may talk to
# the host and nothing else, unless a user rule selecting reserved:init allows more.
INIT_RULES = parse_policy([{
    "endpointSelector": {"matchLabels": {"reserved:init": ""}},
    "ingress": [{"fromEntities": ["host"]}],
    "egress": [{"toEntities": ["host"]}],
    "description": "built-in: endpoints with unknown labels reach only the host",
}])

# Each rule is its own key, named by the revision that added it and its place in that
# import, so keys sort in rule order and an import or delete writes only what changed
# (not the whole list, which grew with every import). RULES_KEY is the old whole-list
# key, read once to migrate.
RULE_PREFIX = "cilium-py/policy/rule/"
RULES_KEY = "cilium-py/policy/rules"
REVISION_KEY = "cilium-py/policy/revision"
CIDR_USER = "policy-cidr"


def parse_label_query(labels: Iterable[str]) -> list[Any]:
    try:
        return [parse_select_label(text) for text in labels]
    except LabelError as exc:
        raise InvalidInput(f"invalid label: {exc}", {"labels": str(exc)}) from exc


class PolicyManager:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.store: Store = agent.store
        self.repo = Repository()
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._index: IdentityIndex | None = None
        self._cidr_ids: dict[str, int] = {}
        self.resolved: dict[str, ResolvedPolicy] = {}
        self._node_addrs: list[str] = []
        self._l7_proxies: tuple[str, ...] | None = None
        self._rule_keys: list[str] = []  # store key of each rule, in repository order
        # Endpoints whose last regeneration failed: denying, not-ready, tried again.
        self.retry = RegenerationRetry(self._retry_endpoint)
        # Set while the ipcache could not be written: every endpoint waits on it.
        self._ipcache_error: str | None = None

    @property
    def l7_proxies(self) -> tuple[str, ...]:
        """The L7 parsers a proxy enforces (the resolver redirects only those)."""
        if self._l7_proxies is not None:
            return self._l7_proxies
        proxies = getattr(self.agent, "proxies", None)
        return proxies.parsers() if proxies is not None else ()

    @l7_proxies.setter
    def l7_proxies(self, value: tuple[str, ...]) -> None:
        self._l7_proxies = tuple(value)

    # -- persistence -------------------------------------------------------------------

    def load(self) -> None:
        rev = self.store.get(REVISION_KEY)
        stored_rules = self._stored_rules()
        self._rule_keys = [key for key, _ in stored_rules]
        rules = [rule for _, rule in stored_rules]
        if stored_rules or rev is not None:
            stored = int(rev.value) if rev else 1
            # replace_all bumps the revision: start one below so the repository runs
            # exactly the stored revision (other nodes compare against it).
            self.repo = Repository(revision=stored - 1 if rules else stored)
            if rules:
                self.repo.replace_all(rules)
            log.info("policy restored", extra={"fields": {
                "rules": len(rules), "revision": self.repo.revision}})
        self._sync_cidr_identities()

    def _stored_rules(self) -> list[tuple[str, Any]]:
        """(key, rule) in rule order, migrating a whole-list RULES_KEY on the way."""
        entries = sorted(self.store.list(RULE_PREFIX), key=lambda kv: kv.key)
        if not entries:
            legacy = self.store.get(RULES_KEY)
            if legacy is None:
                return []
            rules = parse_policy(json.loads(legacy.value))
            rev = self.store.get(REVISION_KEY)
            keys = self._store_rules(rules, int(rev.value) if rev else 1)
            self.store.delete(RULES_KEY)
            log.info("policy moved to one key per rule", extra={"fields": {
                "rules": len(rules)}})
            return list(zip(keys, rules, strict=True))
        # One rule per key: parse them as one document (one validation pass).
        document = [json.loads(kv.value)[0] for kv in entries]
        return list(zip((kv.key for kv in entries), parse_policy(document), strict=True))

    def _store_rules(self, rules: Iterable[Any], revision: int) -> list[str]:
        """Write each rule under a new key; a key taken by another node gets a suffix."""
        keys = []
        for place, rule in enumerate(rules):
            key = f"{RULE_PREFIX}{revision:012d}-{place:05d}"
            value = json.dumps([rule.to_dict()]).encode()
            if not self.store.create(key, value):
                key = f"{key}-{uuid.uuid4().hex[:8]}"
                self.store.put(key, value)
            keys.append(key)
        return keys

    def reload_if_newer(self) -> bool:
        """Take up rules another node wrote to the shared store; True when they changed."""
        rev = self.store.get(REVISION_KEY)
        if rev is None or int(rev.value) <= self.repo.revision:
            return False
        with self._lock:
            self.load()
        log.info("policy changed on another node", extra={"fields": {
            "revision": self.repo.revision}})
        return True

    def _persist_revision(self) -> None:
        self.store.put(REVISION_KEY, str(self.repo.revision).encode())

    # -- changes -------------------------------------------------------------------------

    def import_rules(self, document: Any) -> int:
        started = time.perf_counter()
        revision = self._import_rules(document)
        self.agent.metrics.policy_import(time.perf_counter() - started)
        self.agent.events.publish({"type": "agent", "message": "policy-imported",
                                   "revision": revision, "rules": len(self.repo)})
        return revision

    def _import_rules(self, document: Any) -> int:
        try:
            rules = parse_policy(document)
        except PolicyValidationError as exc:
            summary = "; ".join(f"{k}: {v}" for k, v in sorted(exc.fields.items()))
            raise InvalidInput(f"invalid policy: {summary}", dict(exc.fields)) from exc
        with self._lock:
            revision = self.repo.add(rules)
            self._rule_keys.extend(self._store_rules(rules, revision))
            self._persist_revision()
            self._sync_cidr_identities()
            for rule in rules:
                for port in self._l7_ports(rule):
                    if not self.l7_proxies:
                        log.warning("L7 rules enforced at L4 only: no L7 proxy available",
                                    extra={"fields": {"port": port}})
        self.regenerate_all()
        return revision

    @staticmethod
    def _l7_port_parsers(rule: Any) -> list[tuple[str, tuple[str, ...]]]:
        out = []
        for section in (*rule.ingress, *rule.egress):
            for port_rule in section.to_ports:
                if port_rule.rules is not None and not port_rule.rules.is_empty():
                    out.extend((str(p), port_rule.rules.parsers()) for p in port_rule.ports)
        return out

    @staticmethod
    def _l7_ports(rule: Any) -> list[str]:
        out = []
        for section in (*rule.ingress, *rule.egress):
            for port_rule in section.to_ports:
                if port_rule.rules is not None and not port_rule.rules.is_empty():
                    out.extend(str(p) for p in port_rule.ports)
        return out

    def delete(self, labels: Iterable[str]) -> tuple[int, int]:
        query = parse_label_query(labels)
        with self._lock:
            gone = {index for index, _ in self.repo.search(query)}
            result = self.repo.delete(query)
            if not result.deleted:
                raise NotFound("no policy rule has these labels", {"labels": ",".join(labels)})
            for index in sorted(gone):
                self.store.delete(self._rule_keys[index])
            self._rule_keys = [k for i, k in enumerate(self._rule_keys) if i not in gone]
            self._persist_revision()
            self._sync_cidr_identities()
        self.agent.events.publish({"type": "agent", "message": "policy-deleted",
                                   "revision": result.revision, "deleted": result.deleted})
        self.regenerate_all()
        return result.deleted, result.revision

    def get(self, labels: Iterable[str] = ()) -> dict[str, Any]:
        query = parse_label_query(labels)
        notes = []
        for index, rule in self.repo.search(query):
            for port, parsers in self._l7_port_parsers(rule):
                if not all(p in self.l7_proxies for p in parsers):
                    notes.append(f"rule {index}: L7 rules on {port} are enforced at L4 only "
                                 f"(no {'+'.join(parsers)} proxy is available)")
                else:
                    notes.append(f"rule {index}: {port} is redirected to the L7 proxy")
        return {"revision": self.repo.revision, "policy": self.repo.to_json(query),
                "notes": notes}

    # -- identities of CIDRs ---------------------------------------------------------

    def _sync_cidr_identities(self) -> None:
        wanted = {str(p) for p in cidr_identity_prefixes(self.repo.rules)}
        identities = self.agent.identities
        for prefix in wanted - set(self._cidr_ids):
            labels = cidr_identity_labels(prefix)
            self._cidr_ids[prefix] = identities.allocate(labels, CIDR_USER + ":" + _safe(prefix))
        for prefix in set(self._cidr_ids) - wanted:
            identities.release(self._cidr_ids.pop(prefix), CIDR_USER + ":" + _safe(prefix))
        self._index = None

    def identity_changed(self) -> None:
        self._index = None

    def index(self) -> IdentityIndex:
        if self._index is None:
            self._index = IdentityIndex(
                {k: v for k, v in self.agent.identities.all().items() if k >= 256}
            )
        return self._index

    def ipcache(self) -> dict[str, int]:
        """Address/prefix -> identity for the datapath's LPM map."""
        out: dict[str, int] = dict(self._cidr_ids)
        for ep in self.agent.endpoints.list():
            out.update(self.endpoint_ipcache(ep))
        if self.agent.cluster is not None:
            for prefix, identity in self.agent.cluster.ipcache().items():
                out.setdefault(prefix, identity)
        for addr in self._node_addrs:
            out[addr] = 1
        return out

    @staticmethod
    def endpoint_ipcache(ep: Any) -> dict[str, int]:
        out = {}
        for fam, plen in (("ipv4", 32), ("ipv6", 128)):
            addr = ep.addressing.get(fam)
            if addr:
                out[f"{addr}/{plen}"] = ep.identity
        return out

    def refresh_node_addresses(self) -> None:
        """Every address of this node's own interfaces (identity 1, host): the router
        addresses and the uplink's, so that "toEntities: host" covers all of them.
        Read at start and on full regenerations, not per endpoint: the dump grows
        with the number of host veths."""
        from pyroute2 import IPRoute

        out = []
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                addr = msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL")
                if not addr or addr.startswith(("127.", "fe80:")) or addr == "::1":
                    continue
                out.append(f"{addr}/{32 if msg['family'] == 2 else 128}")
        self._node_addrs = out

    def sync_ipcache(self) -> None:
        if self.agent.datapath is not None:
            self.agent.datapath.set_ipcache(self.ipcache())

    def endpoint_ipcache_changed(self, ep: Any, gone: bool = False) -> None:
        """One endpoint came, went or changed identity: touch only its entries
        (its addresses never change while it lives)."""
        datapath = self.agent.datapath
        if datapath is None:
            return
        entries = self.endpoint_ipcache(ep)
        if gone:
            datapath.update_ipcache({}, list(entries))
        else:
            datapath.update_ipcache(entries, [])

    # -- regeneration ------------------------------------------------------------------

    def mode_for(self, ep: Any) -> EnforcementMode:
        return EnforcementMode(ep.enforcement or self.agent.config.enforcement)

    def resolve(self, ep: Any) -> ResolvedPolicy:
        rules, revision = self.repo.snapshot()
        resolved = resolve_policy(
            (*INIT_RULES, *rules), LabelSet.parse(ep.labels), self.index(),
            mode=self.mode_for(ep),
            allow_host_ingress=self.agent.config.allow_host_ingress,
            l7_proxies=self.l7_proxies,
            revision=revision,
        )
        proxies = getattr(self.agent, "proxies", None)
        return with_proxy_ports(resolved, proxies.proxy_port) if proxies is not None else resolved

    def _sync_proxies(self) -> None:
        """Every proxy gets the redirects of every endpoint (before the datapath
        starts redirecting to it: a new redirect is enforced from its first packet)."""
        proxies = getattr(self.agent, "proxies", None)
        if proxies is None:
            return
        addresses = {ep.id: [a for a in ep.addressing.values() if a]
                     for ep in self.agent.endpoints.list()}
        proxies.sync({k: v for k, v in self.resolved.items() if k in addresses}, addresses,
                     self.ipcache())

    def _write(self, ep: Any, resolved: ResolvedPolicy, previous: ResolvedPolicy | None) -> None:
        datapath = self.agent.datapath
        if datapath is not None and ep.ifindex:
            datapath.set_policy(ep, resolved)
            gained = redirected_ports(resolved) - redirected_ports(previous)
            if gained:
                # Connections opened before the L7 rule must not bypass the proxy.
                cut = datapath.flush_ct_ports(
                    [a for a in ep.addressing.values() if a], sorted(gained))
                log.info("connections cut for new L7 redirects", extra={"fields": {
                    "id": ep.id, "ports": sorted(gained), "entries": cut}})
        ep.policy_revision = resolved.revision or 0

    # -- fail closed -----------------------------------------------------------------

    def _closed(self, ep: Any, *, host: bool) -> ResolvedPolicy:
        """Both directions enforced; nothing allowed but, with ``host``, what
        --allow-host-ingress lets the host send."""
        if host:
            return resolve_policy((), LabelSet.parse(ep.labels), self.index(),
                                  mode=EnforcementMode.ALWAYS,
                                  allow_host_ingress=self.agent.config.allow_host_ingress)
        return ResolvedPolicy(LabelSet.parse(ep.labels),
                              DirectionPolicy(Direction.INGRESS, True, {}),
                              DirectionPolicy(Direction.EGRESS, True, {}))

    def close(self, ep: Any) -> None:
        """Before a new endpoint's programs see a packet: deny all (the host may
        still reach it where --allow-host-ingress says so). Part of EndpointPolicy."""
        datapath = self.agent.datapath
        if datapath is not None:
            try:
                datapath.set_policy(ep, self._closed(ep, host=True))
            except Exception as exc:
                raise Unavailable(f"endpoint {ep.id}: cannot close it before attach: {exc}",
                                  {"id": ep.id}) from exc

    def enforce(self, ep: Any, event: str) -> None:
        """A new endpoint, or one whose labels changed: write its policy and what its
        identity changes for others. Raises (Unavailable naming the cause) when its
        own policy could not be written; it is then denying. Part of EndpointPolicy."""
        if not self.agent.node_started:
            return
        cluster = self.agent.cluster
        try:
            if cluster is not None:
                cluster.publish(self.endpoint_ipcache(ep))
            if ep.identity not in self.index():
                self.identity_changed()
                failed = self.regenerate_all()
                if ep.id in failed:
                    raise failed[ep.id]
            else:
                self.endpoint_ipcache_changed(ep)
                self.regenerate(ep)
        except Exception as exc:
            err = self._fail(ep, exc)
            if event == "created":
                # The attach unwinds: nothing to retry, nothing to keep.
                self.retry.clear(ep.id)
                self.resolved.pop(ep.id, None)
                try:
                    self.endpoint_ipcache_changed(ep, gone=True)
                except Exception:  # noqa: BLE001 - the attach error below is what counts
                    log.exception("removing the failed endpoint's ipcache entries failed")
            raise err from exc

    def _fail(self, ep: Any, exc: BaseException) -> CiliumPyError:
        """A regeneration of ``ep`` failed: deny all, say so, try again later.
        Returns the error to give a caller (naming the endpoint and the cause)."""
        reason = exc.message if isinstance(exc, CiliumPyError) else str(exc) or repr(exc)
        reason = f"policy regeneration failed: {reason}"
        datapath = self.agent.datapath
        if datapath is not None and ep.ifindex:
            try:
                # No entries to write: only the flags change (and stale entries go).
                datapath.set_policy(ep, self._closed(ep, host=False))
            except Exception:  # noqa: BLE001 - logged; the state still says not-ready
                log.exception("could not switch a failed endpoint to deny-all",
                              extra={"fields": {"id": ep.id}})
        self.resolved.pop(ep.id, None)
        self.agent.endpoints.mark_not_ready(ep, reason)
        wait = self.retry.schedule(ep.id, reason)
        log.error("endpoint denying all traffic: %s", reason, extra={"fields": {
            "id": ep.id, "retry-in-seconds": wait}})
        if isinstance(exc, CiliumPyError) and not isinstance(exc, Unavailable):
            return exc
        return Unavailable(f"endpoint {ep.id}: {reason}", {"id": ep.id})

    def _retry_endpoint(self, ep_id: str) -> bool:
        """RegenerationRetry's call: True when done (regenerated, or gone)."""
        try:
            ep = self.agent.endpoints.get(ep_id)
        except NotFound:
            return True
        if ep.state != "not-ready" or not ep.ifindex:
            return True
        if self._ipcache_error is not None:
            return ep.id not in self.regenerate_all()
        with self._lock:
            try:
                self.regenerate(ep)
            except Exception:  # noqa: BLE001 - _fail has rescheduled it
                return False
        return True

    def _succeeded(self, ep: Any) -> None:
        if ep.state == "not-ready":
            log.info("endpoint regenerated after failing", extra={"fields": {"id": ep.id}})
        self.retry.clear(ep.id)
        self.agent.endpoints.mark_ready(ep)

    def regenerate(self, ep: Any) -> None:
        """Write one endpoint's policy; a failure leaves it denying and not-ready
        (see _fail) and propagates."""
        started = time.perf_counter()
        try:
            self._regenerate(ep)
        except Exception as exc:
            self._regenerated(ep, started, ok=False)
            raise self._fail(ep, exc) from exc
        self._regenerated(ep, started, ok=True)
        self._succeeded(ep)

    def _regenerated(self, ep: Any, started: float, ok: bool) -> None:
        """Metrics and the monitor's agent event of one regeneration."""
        self.agent.metrics.regeneration(time.perf_counter() - started, ok=ok)
        self.agent.events.publish({
            "type": "agent", "message": "endpoint-regenerated" if ok else
            "endpoint-regeneration-failed", "endpoint": ep.id, "identity": ep.identity,
            "revision": getattr(ep, "policy_revision", None)})

    def _regenerate(self, ep: Any) -> None:
        resolved = self.resolve(ep)
        previous = self.resolved.get(ep.id)
        self.resolved[ep.id] = resolved
        try:
            self._sync_proxies()
        finally:
            self._write(ep, resolved, previous)
        with self._changed:
            self._changed.notify_all()

    def regenerate_all(self) -> dict[str, CiliumPyError]:
        """Regenerate every endpoint. One that fails is left denying and not-ready
        (see _fail) without blocking the others; returns the failures by id."""
        failed: dict[str, CiliumPyError] = {}
        with self._lock:
            started = time.monotonic()
            eps = self.agent.endpoints.list()
            try:
                self.refresh_node_addresses()
                self.sync_ipcache()
            except Exception as exc:  # noqa: BLE001 - every endpoint fails closed below
                # Without a complete ipcache no remote identity is certain.
                self._ipcache_error = str(exc)
                log.exception("ipcache update failed")
                for ep in eps:
                    failed[ep.id] = self._fail(ep, exc)
                return failed
            self._ipcache_error = None
            previous = dict(self.resolved)
            for ep in eps:
                try:
                    self.resolved[ep.id] = self.resolve(ep)
                except Exception as exc:  # noqa: BLE001 - one endpoint must not block others
                    log.exception("policy resolution failed", extra={"fields": {"id": ep.id}})
                    failed[ep.id] = self._fail(ep, exc)
            try:
                self._sync_proxies()
            except Exception:  # noqa: BLE001 - reported by the proxy's health; the
                # datapath still redirects, and a proxy that is not there drops
                log.exception("proxy update failed")
            for ep in eps:
                if ep.id in failed or ep.id not in self.resolved:
                    continue
                begun = time.perf_counter()
                try:
                    self._write(ep, self.resolved[ep.id], previous.get(ep.id))
                except Exception as exc:  # noqa: BLE001 - one endpoint must not block others
                    self._regenerated(ep, begun, ok=False)
                    failed[ep.id] = self._fail(ep, exc)
                else:
                    self._regenerated(ep, begun, ok=True)
                    self._succeeded(ep)
            with self._changed:
                self._changed.notify_all()
            log.info("policy regenerated", extra={"fields": {
                "endpoints": len(eps), "revision": self.repo.revision, "failed": len(failed),
                "seconds": round(time.monotonic() - started, 3)}})
        return failed

    def forget(self, ep_id: str) -> None:
        if self.resolved.pop(ep_id, None) is not None:
            try:
                self._sync_proxies()
            except Exception:  # noqa: BLE001 - reported by the proxy's health
                log.exception("proxy update failed")

    def wait(self, revision: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                eps = self.agent.endpoints.list()
                if all(ep.policy_revision >= revision for ep in eps) and (
                    self.repo.revision >= revision
                ):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))

    # -- trace ---------------------------------------------------------------------------

    def trace(self, src: list[str], dst: list[str], dport: str | None,
              http: HTTPRequest | None = None, kafka: Any = None) -> dict[str, Any]:
        source, destination = parse_labels(src), parse_labels(dst)
        port, proto = None, Protocol.ANY
        if dport:
            text, _, proto_text = dport.partition("/")
            try:
                port = int(text)
                proto = Protocol[(proto_text or "ANY").upper()]
                if not 1 <= port <= 65535:
                    raise ValueError
            except (ValueError, KeyError) as exc:
                raise InvalidInput(f"invalid port {dport!r}: use PORT[/TCP|UDP|ANY]",
                                   {"dport": dport}) from exc
        result = trace_policy(
            (*INIT_RULES, *self.repo.rules), source, destination, port=port, protocol=proto,
            mode=EnforcementMode(self.agent.config.enforcement),
            allow_host_ingress=self.agent.config.allow_host_ingress,
            l7_proxies=self.l7_proxies, http=http, kafka=kafka,
        )
        doc = result.to_dict()
        doc["text"] = result.render()
        return doc


def _safe(prefix: str) -> str:
    return prefix.replace("/", "_").replace(":", "-")
