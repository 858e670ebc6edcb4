"""State storage: one interface, pluggable backends chosen by URL."""

from __future__ import annotations

import os

from .base import Event, KeyValue, Store, StoreError
from .tls import EtcdTLS

__all__ = ["EtcdTLS", "Event", "KeyValue", "Store", "StoreError", "open_store"]


def open_store(url: str | None, state_dir: str, tls: EtcdTLS | None = None) -> Store:
    """Open the store named by ``url``; None or "" means the embedded store in
    ``state_dir``. ``sqlite:///path`` names another file; ``etcd://host:port[,...]`` (or
    ``etcds://`` for TLS, also implied by ``tls``) the cluster store.
    """
    from .sqlite import SQLiteStore

    if not url:
        return SQLiteStore(os.path.join(state_dir, "store.db"))
    if url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite://") :])
    if url.startswith(("etcd://", "etcds://")):
        from .etcd import EtcdStore

        return EtcdStore(url, tls=tls)
    raise StoreError(
        f"unknown store URL {url!r}: use sqlite:///PATH, etcd://HOST:PORT or leave it empty"
    )
