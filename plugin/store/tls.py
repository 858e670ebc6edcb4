"""Client TLS settings for the cluster store, kept apart from the etcd client so that
configuration code can name them without importing it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EtcdTLS:
    """Client TLS as etcdctl takes it: --cacert, --cert, --key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file)
