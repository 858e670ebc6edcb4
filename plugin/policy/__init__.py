"""The policy engine's pure core: Cilium 1.x policy JSON in, per-endpoint map entries out.

No sockets, kernel, store or web framework here: the agent feeds rules and identities
in and writes what comes out. One concept per module:

- :mod:`.schema`: validate a document into :class:`~.rule.Rule` objects;
- :mod:`.rule`, :mod:`.selector`, :mod:`.l4`, :mod:`.l7`, :mod:`.cidr`, :mod:`.entities`:
  the parsed rule model;
- :mod:`.repository`: the rule list, its revision, delete by labels;
- :mod:`.identities`: known identities, indexed for selector queries;
- :mod:`.resolve`: one endpoint's entries ``(identity, port, proto, direction) -> verdict``;
- :mod:`.trace`: ``policy trace`` explanations.
"""

from .cidr import CIDRRule
from .entities import Entity
from .errors import PolicyError, PolicyValidationError
from .identities import ANY_IDENTITY, IdentityIndex
from .l4 import PortProtocol, PortRule, Protocol, parse_port_protocol
from .l7 import HTTPRule, KafkaRule, L7Rules
from .repository import DeleteResult, Repository
from .resolve import (
    Action,
    DirectionPolicy,
    EnforcementMode,
    L7Port,
    PolicyKey,
    ResolvedPolicy,
    Verdict,
    cidr_identity_prefixes,
    referenced_cidrs,
    resolve_policy,
)
from .rule import Direction, Rule, Section
from .schema import parse_policy
from .selector import EndpointSelector, Operator, Requirement
from .trace import TraceResult, TraceVerdict, trace_policy

__all__ = [
    "ANY_IDENTITY",
    "Action",
    "CIDRRule",
    "DeleteResult",
    "Direction",
    "DirectionPolicy",
    "EndpointSelector",
    "EnforcementMode",
    "Entity",
    "HTTPRule",
    "IdentityIndex",
    "KafkaRule",
    "L7Port",
    "L7Rules",
    "Operator",
    "PolicyError",
    "PolicyKey",
    "PolicyValidationError",
    "PortProtocol",
    "PortRule",
    "Protocol",
    "Repository",
    "Requirement",
    "ResolvedPolicy",
    "Rule",
    "Section",
    "TraceResult",
    "TraceVerdict",
    "Verdict",
    "cidr_identity_prefixes",
    "parse_policy",
    "parse_port_protocol",
    "referenced_cidrs",
    "resolve_policy",
    "trace_policy",
]
