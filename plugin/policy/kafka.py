"""Kafka L7 policy: which requests ``toPorts[].rules.kafka`` allows.

Pure data in, verdict out: the proxy hands in what it read from a request (API key,
version, client id, topic names) and gets back allowed or not, and why. Semantics are
Cilium's (``pkg/kafka``):

- a rule matches a request when its API keys (``apiKey``, or the set ``role`` expands
  to), ``apiVersion`` and ``clientID`` match; an empty field matches anything;
- a request that names no topic is allowed by any matching rule;
- a request that names topics is allowed when every topic is allowed, each by some
  matching rule whose ``topic`` is that name, or all at once by a matching rule
  without ``topic``. A topic the request identifies only by id (newer versions of
  some APIs) has no name to compare, so only a rule without ``topic`` allows it;
- no rule, no request: an empty rule list allows nothing.

The API key numbers are the Kafka protocol's own (they are part of the wire format
and never change meaning); the proxy's tests check this table against kafka-python's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .l7 import KafkaRule

#: Kafka's API names by key number, as the protocol documentation spells them.
API_NAMES: dict[int, str] = dict(
    enumerate(
        (
            "Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr", "StopReplica",
            "UpdateMetadata", "ControlledShutdown", "OffsetCommit", "OffsetFetch",
            "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup",
            "DescribeGroups", "ListGroups", "SaslHandshake", "ApiVersions", "CreateTopics",
            "DeleteTopics", "DeleteRecords", "InitProducerId", "OffsetForLeaderEpoch",
            "AddPartitionsToTxn", "AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers",
            "TxnOffsetCommit", "DescribeAcls", "CreateAcls", "DeleteAcls", "DescribeConfigs",
            "AlterConfigs", "AlterReplicaLogDirs", "DescribeLogDirs", "SaslAuthenticate",
            "CreatePartitions", "CreateDelegationToken", "RenewDelegationToken",
            "ExpireDelegationToken", "DescribeDelegationToken", "DeleteGroups",
            "ElectLeaders", "IncrementalAlterConfigs", "AlterPartitionReassignments",
            "ListPartitionReassignments", "OffsetDelete", "DescribeClientQuotas",
            "AlterClientQuotas", "DescribeUserScramCredentials", "AlterUserScramCredentials",
            "Vote", "BeginQuorumEpoch", "EndQuorumEpoch", "DescribeQuorum", "AlterPartition",
            "UpdateFeatures", "Envelope", "FetchSnapshot", "DescribeCluster",
            "DescribeProducers", "BrokerRegistration", "BrokerHeartbeat", "UnregisterBroker",
            "DescribeTransactions", "ListTransactions", "AllocateProducerIds",
            "ConsumerGroupHeartbeat", "ConsumerGroupDescribe", "ControllerRegistration",
            "GetTelemetrySubscriptions", "PushTelemetry", "AssignReplicasToDirs",
            "ListConfigResources", "DescribeTopicPartitions", "ShareGroupHeartbeat",
            "ShareGroupDescribe", "ShareFetch", "ShareAcknowledge", "AddRaftVoter",
            "RemoveRaftVoter", "UpdateRaftVoter", "InitializeShareGroupState",
            "ReadShareGroupState", "WriteShareGroupState", "DeleteShareGroupState",
            "ReadShareGroupStateSummary", "StreamsGroupHeartbeat", "StreamsGroupDescribe",
            "DescribeShareGroupOffsets", "AlterShareGroupOffsets", "DeleteShareGroupOffsets",
        )
    )
)  # fmt: skip

#: ``apiKey`` values (matched in any case): every Kafka API name in lower case, and
#: ``offsets``, Cilium's name for ListOffsets.
API_KEYS: dict[str, int] = {name.lower(): key for key, name in API_NAMES.items()}
API_KEYS["offsets"] = 2

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP = 8, 9, 10, 11
HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, API_VERSIONS = 12, 13, 14, 18

#: What ``role`` expands to (Cilium's ``GetAPIKeys``).
ROLES: dict[str, frozenset[int]] = {
    "produce": frozenset({PRODUCE, METADATA, API_VERSIONS}),
    "consume": frozenset(
        {
            FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
            JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, API_VERSIONS,
        }
    ),
}  # fmt: skip

MAX_TOPIC_LEN = 255
MAX_API_VERSION = 32767


def api_name(key: int) -> str:
    """Kafka's name of an API key, or the number for one this table does not know."""
    return API_NAMES.get(key, str(key))


@dataclass(frozen=True, slots=True)
class KafkaRequestInfo:
    """What policy looks at in one request. ``None`` in ``topics`` is a topic named
    only by id; ``client_id`` is ``None`` when the request carries a null one."""

    api_key: int
    api_version: int
    client_id: str | None = None
    topics: tuple[str | None, ...] = ()

    def __str__(self) -> str:
        text = f"Kafka {api_name(self.api_key)} v{self.api_version}"
        if self.client_id:
            text += f" from client {self.client_id!r}"
        if self.topics:
            names = ", ".join("(topic id)" if t is None else t for t in _unique(self.topics))
            text += f" on topic(s) {names}"
        return text


@dataclass(frozen=True, slots=True)
class CompiledKafkaRule:
    """A :class:`~.l7.KafkaRule` with names resolved to numbers, for fast matching."""

    rule: KafkaRule
    api_keys: frozenset[int] | None  # None: any key
    api_version: int | None  # None: any version
    client_id: str | None  # None: any client
    topic: str | None  # None: any topic

    @classmethod
    def compile(cls, rule: KafkaRule) -> CompiledKafkaRule:
        if rule.role and rule.api_key:
            raise ValueError("role and apiKey cannot be combined")
        keys: frozenset[int] | None = None
        if rule.role:
            keys = ROLES[rule.role.lower()]
        elif rule.api_key:
            keys = frozenset({API_KEYS[rule.api_key.lower()]})
        return cls(
            rule=rule,
            api_keys=keys,
            api_version=int(rule.api_version) if rule.api_version else None,
            client_id=rule.client_id or None,
            topic=rule.topic or None,
        )

    def matches_request(self, req: KafkaRequestInfo) -> bool:
        """Key, version and client id match (the topic is looked at separately)."""
        return (
            (self.api_keys is None or req.api_key in self.api_keys)
            and (self.api_version is None or req.api_version == self.api_version)
            and (self.client_id is None or req.client_id == self.client_id)
        )


@dataclass(frozen=True, slots=True)
class KafkaVerdict:
    """The answer for one request: ``allowed``; the rules that allowed it (indexes into
    the policy's rule list); and, when denied, the topics no rule allowed (all of the
    request's topics when no rule matched it at all)."""

    allowed: bool
    rules: tuple[int, ...] = ()
    denied_topics: tuple[str | None, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Match:
    """What the rules say about one (API key, version, client id), precomputed."""

    rules: tuple[int, ...]  # indexes of the matching rules
    any_topic: int | None  # first matching rule without ``topic``
    by_topic: dict[str, int]  # topic -> first matching rule naming it


@dataclass(frozen=True, slots=True)
class KafkaPolicy:
    """The Kafka rules that apply to one (peer identity, port, direction).

    Checks are memoised per (API key, version, client id): a client sends the same
    few kinds of request again and again, so a check costs two dict lookups plus
    one per topic, however many rules there are.
    """

    rules: tuple[CompiledKafkaRule, ...] = field(default=())
    _memo: dict[tuple[int, int, str | None], _Match] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, rules: Iterable[KafkaRule]) -> KafkaPolicy:
        return cls(tuple(CompiledKafkaRule.compile(r) for r in rules))

    def _match(self, req: KafkaRequestInfo) -> _Match:
        key = (req.api_key, req.api_version, req.client_id)
        found = self._memo.get(key)
        if found is None:
            hits = tuple(i for i, r in enumerate(self.rules) if r.matches_request(req))
            any_topic = next((i for i in hits if self.rules[i].topic is None), None)
            by_topic: dict[str, int] = {}
            for i in hits:
                topic = self.rules[i].topic
                if topic is not None:
                    by_topic.setdefault(topic, i)
            if len(self._memo) > 1024:  # a client cycling client ids: keep it bounded
                self._memo.clear()
            found = self._memo[key] = _Match(hits, any_topic, by_topic)
        return found

    def check(self, req: KafkaRequestInfo) -> KafkaVerdict:
        match = self._match(req)
        if not match.rules:
            return KafkaVerdict(
                False,
                denied_topics=_unique(req.topics),
                reason=f"no rule allows {api_name(req.api_key)} v{req.api_version}"
                + (f" from client {req.client_id!r}" if req.client_id else ""),
            )
        if not req.topics:
            return KafkaVerdict(True, rules=(match.rules[0],), reason="request names no topic")
        if match.any_topic is not None:
            return KafkaVerdict(True, rules=(match.any_topic,), reason="rule allows any topic")
        by_topic = match.by_topic
        wanted = _unique(req.topics)
        denied = tuple(t for t in wanted if t is None or t not in by_topic)
        if denied:
            shown = ", ".join("(topic id)" if t is None else t for t in denied)
            return KafkaVerdict(
                False,
                denied_topics=denied,
                reason=f"no rule allows {api_name(req.api_key)} on topic(s) {shown}",
            )
        used = tuple(sorted({by_topic[t] for t in wanted if t is not None}))
        return KafkaVerdict(True, rules=used, reason="every topic is allowed")


def _unique(topics: Sequence[str | None]) -> tuple[str | None, ...]:
    return tuple(dict.fromkeys(topics))
