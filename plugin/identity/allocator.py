"""Identity allocation: a sorted label set maps to one number, cluster-wide via the store.

Two keys per identity, both written with compare-and-swap so concurrent agents (or
threads) agree: ``id/<n>`` holds the canonical labels and claims the number;
``labels/<canonical>`` points back at it and makes "same labels, same number" hold. A
third family, ``users/<n>/<endpoint>``, records who uses the identity; identities nobody
uses are released by ``collect_garbage`` once their grace time has passed, so a
restarting container gets its number back instead of churning policy maps.

In a cluster every node allocates in the same etcd keyspace, so the same labels get the
same number everywhere. A node's user keys are named after it (``<node>:<endpoint>``)
and bound to its lease (``lease``), so they disappear with a node that dies; the
garbage collector of any node then starts the grace time of identities nobody uses any
more. When the node's lease is renewed under a new id (after an etcd outage) its user
keys are written again under it (``rebind``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from ..errors import Unavailable
from ..labels import LabelSet
from ..labels.reserved import MIN_USER_IDENTITY, RESERVED_LABELS, reserved_identity_of
from ..logs import get_logger
from ..store import Store, StoreError

log = get_logger("identity")

MAX_IDENTITY = 65535
DEFAULT_GRACE_SECONDS = 60.0


class IdentityAllocator:
    def __init__(
        self,
        store: Store,
        prefix: str = "cilium-py/identities/",
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        clock: Callable[[], float] = time.time,
        node: str | None = None,
        lease: Callable[[], int | None] | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.grace = grace_seconds
        self.clock = clock
        self.node = node
        self.lease = lease
        self._held: set[tuple[int, str]] = set()
        # Told of every number this allocator creates (the monitor's agent events).
        self.on_allocate: Callable[[int, str], None] | None = None
        # The last identities read from the store: what the node knows when a cluster
        # store is away (an endpoint with known labels still comes up, policy resolves).
        self._known: dict[int, LabelSet] = {}
        self._lock = threading.Lock()
        self._next_hint = MIN_USER_IDENTITY

    def _id_key(self, number: int) -> str:
        return f"{self.prefix}id/{number}"

    def _labels_key(self, labels: LabelSet) -> str:
        return f"{self.prefix}labels/{labels.canonical()}"

    def _user_key(self, number: int, user: str) -> str:
        if self.node:
            user = f"{self.node}:{user}"
        return f"{self.prefix}users/{number}/{user}"

    def _put_user(self, number: int, user: str) -> None:
        lease = self.lease() if self.lease else None
        if lease:
            self.store.put(self._user_key(number, user), b"1", lease=lease)  # type: ignore[call-arg]
        else:
            self.store.put(self._user_key(number, user), b"1")
        self._held.add((number, user))

    def rebind(self) -> None:
        """Write this node's user keys again (under the current lease)."""
        with self._lock:
            for number, user in sorted(self._held):
                try:
                    self._put_user(number, user)
                except StoreError:
                    log.warning("identity user not rebound yet", extra={"fields": {
                        "id": number, "user": user}})

    def lookup(self, labels: LabelSet) -> int | None:
        reserved = reserved_identity_of(labels)
        if reserved is not None:
            return int(reserved)
        kv = self.store.get(self._labels_key(labels))
        return int(kv.value) if kv else None

    def allocate(self, labels: LabelSet, user: str) -> int:
        """The identity of ``labels``, created if needed, and mark ``user`` as using it."""
        reserved = reserved_identity_of(labels)
        if reserved is not None:
            return int(reserved)
        with self._lock:
            try:
                number = self._allocate_number(labels)
                self._put_user(number, user)
            except StoreError as exc:
                number = self._known_number(labels)
                if number is None:
                    raise Unavailable(
                        f"the store is unreachable and labels {labels.canonical()} have no "
                        f"known identity yet: {exc}") from exc
                # Written under the lease once the store is back (rebind).
                self._held.add((number, user))
                log.warning("store unreachable: using the known identity",
                            extra={"fields": {"id": number, "labels": labels.canonical()}})
            self._known[number] = labels
        return number

    def _known_number(self, labels: LabelSet) -> int | None:
        for number, known in self._known.items():
            if known == labels:
                return number
        return None

    def _allocate_number(self, labels: LabelSet) -> int:
        canonical = labels.canonical()
        for _ in range(1000):
            existing = self.store.get(self._labels_key(labels))
            if existing is not None:
                number = int(existing.value)
                claim = self.store.get(self._id_key(number))
                if claim is not None:
                    self._touch(number, claim.mod_revision, canonical)
                    return number
                # The number was released under us; drop the stale pointer and retry.
                self.store.compare_and_swap(self._labels_key(labels), existing.mod_revision, None)
                continue
            number = self._claim_free_number(canonical)
            if self.store.create(self._labels_key(labels), str(number).encode()):
                fields = {"id": number, "labels": canonical}
                log.info("identity allocated", extra={"fields": fields})
                if self.on_allocate is not None:
                    self.on_allocate(number, canonical)
                return number
            # Another allocator won the labels key: give our number back and use theirs.
            claim = self.store.get(self._id_key(number))
            if claim is not None:
                self.store.compare_and_swap(self._id_key(number), claim.mod_revision, None)
        raise Unavailable("identity allocation did not converge; try again")

    def _record(self, canonical: str, last_used: float | None = None) -> bytes:
        return json.dumps({"labels": canonical, "released-at": last_used}).encode()

    def _touch(self, number: int, revision: int, canonical: str) -> None:
        kv = self.store.get(self._id_key(number))
        if kv is not None and json.loads(kv.value).get("released-at") is not None:
            self.store.compare_and_swap(self._id_key(number), kv.mod_revision,
                                        self._record(canonical))

    def _claim_free_number(self, canonical: str) -> int:
        candidate = self._next_hint
        for _ in range(MAX_IDENTITY - MIN_USER_IDENTITY + 1):
            if candidate > MAX_IDENTITY:
                candidate = MIN_USER_IDENTITY
            if self.store.create(self._id_key(candidate), self._record(canonical)):
                self._next_hint = candidate + 1
                return candidate
            candidate += 1
        raise Unavailable("no identity numbers left")

    def release(self, number: int, user: str) -> None:
        """``user`` stops using ``number``; the number itself lives on for the grace time."""
        if number < MIN_USER_IDENTITY:
            return
        with self._lock:
            self._held.discard((number, user))
            self.store.delete(self._user_key(number, user))
            if not self.store.list(f"{self.prefix}users/{number}/", limit=1):
                kv = self.store.get(self._id_key(number))
                if kv is not None:
                    doc = json.loads(kv.value)
                    self.store.compare_and_swap(
                        self._id_key(number), kv.mod_revision,
                        self._record(doc["labels"], self.clock()),
                    )

    def users(self, number: int) -> list[str]:
        keys = self.store.list(f"{self.prefix}users/{number}/")
        return [kv.key.rsplit("/", 1)[1] for kv in keys]

    def collect_garbage(self) -> list[int]:
        """Free identities unused for longer than the grace time."""
        freed = []
        now = self.clock()
        for kv in self.store.list(f"{self.prefix}id/"):
            doc = json.loads(kv.value)
            released = doc.get("released-at")
            number = int(kv.key.rsplit("/", 1)[1])
            if released is None:
                # Its last users may have gone with a dead node's lease: start the
                # grace time now (it is stopped again by the next allocation).
                if self.node and not self.users(number):
                    self.store.compare_and_swap(kv.key, kv.mod_revision,
                                                self._record(doc["labels"], now))
                continue
            if now - released < self.grace:
                continue
            if self.users(number):
                continue
            if self.store.compare_and_swap(kv.key, kv.mod_revision, None):
                labels_key = f"{self.prefix}labels/{doc['labels']}"
                pointer = self.store.get(labels_key)
                if pointer is not None and int(pointer.value) == number:
                    self.store.compare_and_swap(labels_key, pointer.mod_revision, None)
                freed.append(number)
        if freed:
            log.info("identities released", extra={"fields": {"ids": freed}})
        return freed

    def all(self) -> dict[int, LabelSet]:
        """Every identity, reserved ones included."""
        out: dict[int, LabelSet] = {int(k): v for k, v in RESERVED_LABELS.items()}
        try:
            listed = self.store.list(f"{self.prefix}id/")
        except StoreError:
            if not self._known:
                raise
            out.update(self._known)  # the last known state, while the store is away
            return out
        known: dict[int, LabelSet] = {}
        for kv in listed:
            number = int(kv.key.rsplit("/", 1)[1])
            known[number] = LabelSet.from_canonical(json.loads(kv.value)["labels"])
        self._known = known
        out.update(known)
        return out

    def get(self, number: int) -> LabelSet | None:
        return self.all().get(number) if number < MIN_USER_IDENTITY else self._get_user(number)

    def _get_user(self, number: int) -> LabelSet | None:
        kv = self.store.get(self._id_key(number))
        return LabelSet.from_canonical(json.loads(kv.value)["labels"]) if kv else None
