"""How allocations are laid out in the store.

Two kinds of keys per family, both written with create-if-absent:

- ``<prefix>v4/ip/<address>`` -> ``{"owner": ...}``: the claim on an address. Its
  create is what guarantees an address is never handed out twice, across threads,
  processes and (with etcd) nodes sharing a prefix.
- ``<prefix>v4/owner/<quoted owner>`` -> ``{"address": ...}``: an index so that
  ``allocate`` is idempotent per owner without listing every allocation. It is a
  hint: the address key is checked before the index is trusted.
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

from .pool import IPAddress


def family_dir(prefix: str, family: int) -> str:
    return f"{prefix}v{family}/"


def address_prefix(prefix: str, family: int) -> str:
    return f"{family_dir(prefix, family)}ip/"


def owner_prefix(prefix: str, family: int) -> str:
    return f"{family_dir(prefix, family)}owner/"


def address_key(prefix: str, address: IPAddress) -> str:
    return f"{address_prefix(prefix, address.version)}{address.compressed}"


def owner_key(prefix: str, family: int, owner: str) -> str:
    return f"{owner_prefix(prefix, family)}{quote(owner, safe='')}"


def owner_from_key(key: str, family_prefix: str) -> str:
    return unquote(key[len(family_prefix) :])


def encode_claim(owner: str) -> bytes:
    return json.dumps({"owner": owner}, sort_keys=True).encode()


def decode_claim(value: bytes) -> str:
    return str(json.loads(value)["owner"])


def encode_index(address: IPAddress) -> bytes:
    return json.dumps({"address": address.compressed}).encode()


def decode_index(value: bytes) -> str:
    return str(json.loads(value)["address"])
