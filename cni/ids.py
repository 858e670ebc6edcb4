"""Agent endpoint ids for CNI attachments.

An attachment is (CNI_CONTAINERID, CNI_IFNAME); the agent keys endpoints by a
caller-chosen URL-safe id (``[A-Za-z0-9._~-]{1,128}``). Deriving the id from the
attachment, rather than remembering it, is what lets DEL and CHECK find the endpoint
with no state of our own, two interfaces of one container stay apart, and GC tell the
endpoints this plugin made from the Docker driver's.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

MAX_ID = 128
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
# "~" never occurs in the plain form, so a hashed id cannot equal a plain one.
_HASHED_PREFIX = "~"


def endpoint_id(container_id: str, ifname: str) -> str:
    """``<containerid>-<ifname>`` when that is URL-safe and short enough, else a hash.

    Container ids from kubelet and Mesos (64 hex digits, UUIDs) take the readable
    form; anything else (odd characters, very long ids) is hashed, so ids never collide
    by sanitising two different inputs to the same text.
    """
    plain = f"{container_id}-{ifname}"
    if len(plain) <= MAX_ID and _PLAIN.issuperset(plain):
        return plain
    import hashlib  # only for unusual ids: keeps the common start-up path lean

    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    return _HASHED_PREFIX + digest


def is_cni_endpoint(endpoint: dict[str, Any]) -> bool:
    """Whether this plugin made the endpoint: its id is the one we derive from it."""
    cid, ifname = endpoint.get("container-id"), endpoint.get("interface-name")
    if not isinstance(cid, str) or not cid or not isinstance(ifname, str) or not ifname:
        return False
    return endpoint.get("id") == endpoint_id(cid, ifname)
