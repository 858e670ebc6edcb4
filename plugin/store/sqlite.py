"""The embedded single-host store: SQLite in WAL mode.

In WAL mode every commit is in the WAL file (the OS page cache) before ``put`` returns,
so a ``kill -9`` of the agent loses nothing it acknowledged; ``synchronous=NORMAL``
fsyncs at checkpoints rather than at every commit, which keeps an endpoint attach (a
handful of writes) from paying a disk flush per write. Only a crash of the whole
machine can lose the last commits, and the agent reconciles the kernel state against
the store on start anyway. Several processes
may open the same file (the agent and, in tests, workers hammering compare-and-swap);
SQLite's own locking serialises writers, and ``BEGIN IMMEDIATE`` takes the write lock
up front so a compare-and-swap cannot interleave with another writer.

SQLite's locks are POSIX locks owned by the process, so a store must not be open
across a ``fork()``: open it in the process that uses it (the agent opens it inside
its gunicorn worker) and close it before forking helpers.

Watches poll a change log table by revision; that keeps the backend free of threads
and works across processes, at the cost of ``poll_interval`` latency.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator

from .base import Event, KeyValue, Store, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB
);
"""

# Change-log rows kept for watchers that fall behind; older rows are trimmed.
_CHANGE_LOG_KEEP = 10000


class SQLiteStore(Store):
    """Durable key-value store in one SQLite file."""

    def __init__(self, path: str, poll_interval: float = 0.05) -> None:
        self.path = path
        self.poll_interval = poll_interval
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._local = threading.local()
        self._writes = 0
        db = self._conn()
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        os.chmod(path, 0o600)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
            if exc_type is None:
                self.conn.execute("COMMIT")
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _tx(self) -> SQLiteStore._Tx:
        try:
            return self._Tx(self._conn())
        except sqlite3.Error as exc:  # pragma: no cover - disk errors
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc

    @staticmethod
    def _next_revision(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT COALESCE(MAX(revision), 0) FROM changes").fetchone()
        return int(row[0]) + 1

    def _log(self, db: sqlite3.Connection, kind: str, key: str, value: bytes | None) -> int:
        rev = self._next_revision(db)
        db.execute(
            "INSERT INTO changes (revision, kind, key, value) VALUES (?, ?, ?, ?)",
            (rev, kind, key, value),
        )
        self._writes += 1
        if self._writes % 1000 == 0:
            db.execute("DELETE FROM changes WHERE revision < ?", (rev - _CHANGE_LOG_KEEP,))
        return rev

    def get(self, key: str) -> KeyValue | None:
        row = self._conn().execute(
            "SELECT key, value, mod_revision FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return KeyValue(row[0], bytes(row[1]), row[2]) if row else None

    def put(self, key: str, value: bytes) -> int:
        with self._tx() as db:
            rev = self._log(db, "put", key, value)
            db.execute(
                "INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "mod_revision = excluded.mod_revision",
                (key, value, rev),
            )
            return rev

    def delete(self, key: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM kv WHERE key = ?", (key,))
            if cur.rowcount:
                self._log(db, "delete", key, None)
            return cur.rowcount > 0

    def list(self, prefix: str, limit: int | None = None) -> list[KeyValue]:
        # A key range rather than substr(): the primary-key index answers it without a
        # scan of the whole table.
        rows = self._conn().execute(
            "SELECT key, value, mod_revision FROM kv WHERE key >= ? AND key < ? "
            "ORDER BY key LIMIT ?",
            (prefix, prefix + "\U0010ffff", -1 if limit is None else limit),
        ).fetchall()
        return [KeyValue(k, bytes(v), r) for k, v, r in rows]

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes | None) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            current = row[0] if row else 0
            if current != expected_revision:
                return False
            if value is None:
                if row:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                    self._log(db, "delete", key, None)
                return True
            rev = self._log(db, "put", key, value)
            db.execute(
                "INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "mod_revision = excluded.mod_revision",
                (key, value, rev),
            )
            return True

    def revision(self) -> int:
        row = self._conn().execute("SELECT COALESCE(MAX(revision), 0) FROM changes").fetchone()
        return int(row[0])

    def watch(
        self, prefix: str, start_revision: int = 0, timeout: float | None = None
    ) -> Iterator[Event]:
        last = start_revision
        idle_since = time.monotonic()
        while True:
            rows = self._conn().execute(
                "SELECT revision, kind, key, value FROM changes WHERE revision > ? "
                "AND substr(key, 1, ?) = ? ORDER BY revision",
                (last, len(prefix), prefix),
            ).fetchall()
            for rev, kind, key, value in rows:
                last = rev
                yield Event(kind, key, bytes(value) if value is not None else None, rev)
            if rows:
                idle_since = time.monotonic()
            elif timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            time.sleep(self.poll_interval)

    def status(self) -> dict[str, object]:
        return {"backend": "sqlite", "path": self.path, "revision": self.revision()}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None
