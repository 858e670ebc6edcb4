"""Internal networks (``docker network create --internal``): no way out of the pools.

dockerd tells the driver with ``com.docker.network.internal`` in CreateNetwork's
options, and expects what its bridge does: the containers reach each other (and the
host), but nothing beyond, and nothing beyond reaches them. Two parts do that:

- Join answers without a gateway (:mod:`.network`), so the container gets no default
  route, only the routes to the agent's pools via the router.
- A container that adds a default route itself (``--cap-add NET_ADMIN``) must still not
  get out, so each endpoint of an internal network gets two rules in the plugin
  instance's mangle chain ``CILIUM_PY_DOCKER_INT`` (:class:`.ports.Chains`), jumped to
  from ``mangle FORWARD``: drop what is forwarded from its address to outside the pool,
  and to its address from outside the pool. The mangle hook runs before the filter one,
  where the agent's and dockerd's ACCEPT rules live, so their order cannot undo it, and
  a masqueraded source (Docker's bridge) is still the original one there.

Nothing else changes: traffic between endpoints is delivered by the datapath, traffic
to the host is not forwarded, and both stay subject to policy. The rules carry the
endpoint's comment tag like port rules, so they are removed by tag after a restart too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import Unavailable
from ..logs import get_logger
from .ports import Chains, Runner, run_command, tagged_rules, tags_in

log = get_logger("docker.isolation")


class Isolator(Protocol):
    def isolate(self, eid: str, addresses: Iterable[tuple[int, str, str]]) -> None: ...
    def release(self, eid: str) -> None: ...


@dataclass
class Isolation:
    """The mangle rules of endpoints on internal networks; ``runner`` is swappable."""

    runner: Runner = run_command
    chains: Chains = field(default_factory=Chains)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: set[int] = field(default_factory=set)

    def _ipt(self, family: int, *args: str) -> str:
        tool = "iptables" if family == 4 else "ip6tables"
        return self.runner([tool, "-w", "5", *args])

    def _jump(self) -> tuple[str, ...]:
        return ("-j", self.chains.internal)

    def _has_jump(self, family: int) -> bool:
        try:
            self._ipt(family, "-t", "mangle", "-C", "FORWARD", *self._jump())
            return True
        except Unavailable:
            return False

    def _ensure_chain(self, family: int) -> None:
        if family in self._ready:
            return
        try:
            self._ipt(family, "-t", "mangle", "-N", self.chains.internal)
        except Unavailable:
            pass  # exists already
        if not self._has_jump(family):
            self._ipt(family, "-t", "mangle", "-I", "FORWARD", "1", *self._jump())
        self._ready.add(family)

    def isolate(self, eid: str, addresses: Iterable[tuple[int, str, str]]) -> None:
        """Keep endpoint ``eid`` inside its pools: ``addresses`` are (family, address,
        pool) triples. Idempotent; on failure nothing of it is left."""
        comment = ("-m", "comment", "--comment", self.chains.comment_prefix + eid)
        with self._lock:
            self._release_locked(eid)
            try:
                for family, address, pool in addresses:
                    self._ensure_chain(family)
                    for match in (("-s", address, "!", "-d", pool),
                                  ("!", "-s", pool, "-d", address)):
                        self._ipt(family, "-t", "mangle", "-A", self.chains.internal, *match,
                                  *comment, "-j", "DROP")
            except Exception:
                self._release_locked(eid)
                raise
        log.info("endpoint isolated (internal network)", extra={"fields": {"endpoint": eid}})

    def _release_locked(self, eid: str) -> None:
        tag = self.chains.comment_prefix + eid
        for family in (4, 6):
            try:
                text = self._ipt(family, "-t", "mangle", "-S", self.chains.internal)
            except Unavailable:
                continue  # no chain: nothing isolated in this family
            for rule in tagged_rules(text, tag):
                try:
                    self._ipt(family, "-t", "mangle", "-D", self.chains.internal, *rule)
                except Unavailable as exc:
                    log.warning("could not remove an isolation rule",
                                extra={"fields": {"endpoint": eid, "error": str(exc)}})

    def release(self, eid: str) -> None:
        with self._lock:
            self._release_locked(eid)

    def endpoints_with_rules(self) -> set[str]:
        found: set[str] = set()
        for family in (4, 6):
            try:
                text = self._ipt(family, "-t", "mangle", "-S", self.chains.internal)
            except Unavailable:
                continue
            found |= tags_in(text, self.chains.comment_prefix)
        return found

    def remove_chains(self) -> bool:
        """Remove the chain and its jump, if no endpoint is isolated (uninstall, tests)."""
        with self._lock:
            if self.endpoints_with_rules():
                return False
            for family in (4, 6):
                while self._has_jump(family):
                    self._ipt(family, "-t", "mangle", "-D", "FORWARD", *self._jump())
                for op in ("-F", "-X"):
                    try:
                        self._ipt(family, "-t", "mangle", op, self.chains.internal)
                    except Unavailable:
                        pass  # never created
            self._ready.clear()
        return True
