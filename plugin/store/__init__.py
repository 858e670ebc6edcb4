"""State storage: one interface, pluggable backends chosen by URL."""

from __future__ import annotations

import os

from .base import Event, KeyValue, Store, StoreError

__all__ = ["Event", "KeyValue", "Store", "StoreError", "open_store"]


def open_store(url: str | None, state_dir: str) -> Store:
    """Open the store named by ``url``; None or "" means the embedded store in
    ``state_dir``. ``sqlite:///path`` names another file; ``etcd://`` is reserved for the
    cluster backend.
    """
    from .sqlite import SQLiteStore

    if not url:
        return SQLiteStore(os.path.join(state_dir, "store.db"))
    if url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite://") :])
    if url.startswith("etcd://"):
        raise StoreError("the etcd store backend is not available yet; use the embedded store")
    raise StoreError(f"unknown store URL {url!r}: use sqlite:///PATH or leave it empty")
