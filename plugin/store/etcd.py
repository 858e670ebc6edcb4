"""The cluster store: etcd v3, spoken over its JSON gateway with ``etcd3gw``.

The store interface was shaped after etcd, so this backend is a thin mapping: keys and
values are etcd's, ``mod_revision`` is etcd's, the global revision is etcd's cluster
revision, compare-and-swap is one transaction comparing ``mod_revision`` (0 meaning
"absent", exactly as etcd compares a key that does not exist).

Why the gateway and not gRPC: ``etcd3gw`` needs only ``requests`` (already a
dependency), is maintained with OpenStack, and works with every etcd from 3.2 on,
Debian's included. Watches are HTTP streams, each read on a thread of the client.

Keys can be bound to a lease (``put(..., lease=...)``) so that what a node registers
disappears with it when its agent stops refreshing: node records, identity references.
"""

from __future__ import annotations

import base64
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .base import Event, KeyValue, Store, StoreError
from .tls import EtcdTLS

DEFAULT_PORT = 2379


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's prefix range)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return _b64(bytes(raw))
        raw.pop()
    return _b64(b"\0")  # the whole keyspace


@dataclass(frozen=True)
class EtcdEndpoint:
    host: str
    port: int


def parse_etcd_url(url: str) -> list[EtcdEndpoint]:
    """``etcd://host:port[,host:port...]`` (``etcds://`` for TLS) -> endpoints."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("etcd", "etcds") or not rest:
        raise StoreError(f"invalid etcd URL {url!r}: use etcd://HOST:PORT[,HOST:PORT...]")
    out = []
    for part in rest.rstrip("/").split(","):
        try:
            parsed = urlsplit("//" + part.strip())
            host, port = parsed.hostname, parsed.port or DEFAULT_PORT
        except ValueError as exc:
            raise StoreError(f"invalid etcd endpoint {part!r} in {url!r}: {exc}") from exc
        if not host:
            raise StoreError(f"invalid etcd endpoint {part!r} in {url!r}")
        out.append(EtcdEndpoint(host, port))
    return out


class EtcdStore(Store):
    """The store interface over an etcd v3 cluster.

    Requests go to the first endpoint that answers; a failed request moves on to the
    next one, so one dead member of a cluster does not stop the agent.
    """

    def __init__(
        self,
        url: str,
        tls: EtcdTLS | None = None,
        timeout: float = 5.0,
    ) -> None:
        from etcd3gw.client import Etcd3Client

        self.url = url
        self.tls = tls or EtcdTLS()
        secure = self.tls.enabled or url.startswith("etcds://")
        self._clients = [
            Etcd3Client(
                host=ep.host, port=ep.port,
                protocol="https" if secure else "http",
                ca_cert=self.tls.ca_file, cert_cert=self.tls.cert_file,
                cert_key=self.tls.key_file, timeout=timeout, api_path="/v3/",
            )
            for ep in parse_etcd_url(url)
        ]
        for client in self._clients:
            # requests lets REQUESTS_CA_BUNDLE and proxy variables override a session's
            # own CA: etcd is reached directly, verified against its own CA only.
            client.session.trust_env = False
        self._current = 0
        self._lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from etcd3gw import exceptions

        errors = []
        for attempt in range(len(self._clients)):
            with self._lock:
                index = (self._current + attempt) % len(self._clients)
            client = self._clients[index]
            try:
                result = client.post(client.get_url(path), json=body)
            except (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError) as exc:
                errors.append(f"{client.host}:{client.port}: {exc}")
                continue
            except exceptions.Etcd3Exception as exc:
                raise StoreError(f"etcd refused {path}: {exc.detail_text or exc}") from exc
            with self._lock:
                self._current = index
            return result
        raise StoreError("etcd unreachable: " + "; ".join(errors))

    @staticmethod
    def _kv(item: dict[str, Any]) -> KeyValue:
        return KeyValue(
            key=_unb64(item["key"]).decode(),
            value=_unb64(item.get("value")),
            mod_revision=int(item.get("mod_revision", 0)),
        )

    @staticmethod
    def _header_revision(result: dict[str, Any]) -> int:
        return int(result.get("header", {}).get("revision", 0))

    # -- the interface -----------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        result = self._call("/kv/range", {"key": _b64(key)})
        kvs = result.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return self._header_revision(self._call("/kv/put", body))

    def delete(self, key: str) -> bool:
        result = self._call("/kv/deleterange", {"key": _b64(key)})
        return int(result.get("deleted", 0)) > 0

    def list(self, prefix: str, limit: int | None = None) -> list[KeyValue]:
        body: dict[str, Any] = {
            "key": _b64(prefix), "range_end": _range_end(prefix),
            "sort_order": "ASCEND", "sort_target": "KEY",
        }
        if limit:
            body["limit"] = limit
        result = self._call("/kv/range", body)
        return [self._kv(item) for item in result.get("kvs") or []]

    def compare_and_swap(
        self, key: str, expected_revision: int, value: bytes | None, lease: int | None = None
    ) -> bool:
        compare = {
            "key": _b64(key), "target": "MOD", "result": "EQUAL",
            "mod_revision": expected_revision,
        }
        if value is None:
            success = {"request_delete_range": {"key": _b64(key)}}
        else:
            put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
            if lease:
                put["lease"] = lease
            success = {"request_put": put}
        result = self._call("/kv/txn", {"compare": [compare], "success": [success]})
        return bool(result.get("succeeded", False))

    def create(self, key: str, value: bytes, lease: int | None = None) -> bool:
        return self.compare_and_swap(key, 0, value, lease=lease)

    def revision(self) -> int:
        # A range over an empty key with count_only reads just the header.
        result = self._call("/kv/range", {"key": _b64("\0"), "count_only": True})
        return self._header_revision(result)

    def watch(
        self, prefix: str, start_revision: int = 0, timeout: float | None = None
    ) -> Iterator[Event]:
        """Changes after ``start_revision``; etcd replays from its history, so a watcher
        that resumes from the revision it last saw misses nothing (until compaction)."""
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        client = self._clients[self._current]
        from etcd3gw.watch import Watcher

        try:
            watcher = Watcher(
                client, prefix, events.put,
                start_revision=start_revision + 1 if start_revision else None,
                range_end=_unb64(_range_end(prefix)),  # type: ignore[arg-type]
            )
        except Exception as exc:  # requests errors: etcd not reachable
            raise StoreError(f"etcd watch on {prefix!r} failed: {exc}") from exc
        try:
            while True:
                try:
                    raw = events.get(timeout=timeout)
                except queue.Empty:
                    return
                if raw is None:
                    return
                kv = raw.get("kv", {})
                key = kv.get("key")
                key = key.decode() if isinstance(key, bytes) else str(key)
                deleted = raw.get("type") == "DELETE"
                value = kv.get("value")
                if isinstance(value, str):
                    value = value.encode()
                yield Event(
                    kind="delete" if deleted else "put", key=key,
                    value=None if deleted else (value or b""),
                    revision=int(kv.get("mod_revision", 0)),
                )
        finally:
            watcher.stop()

    # -- leases (node records and identity references) ---------------------------------

    def grant_lease(self, ttl: int) -> int:
        result = self._call("/lease/grant", {"TTL": ttl})
        return int(result["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh ``lease``; returns its TTL, or -1 when it has expired."""
        result = self._call("/lease/keepalive", {"ID": lease})
        return int(result.get("result", {}).get("TTL", -1))

    def revoke_lease(self, lease: int) -> None:
        self._call("/kv/lease/revoke", {"ID": lease})

    def status(self) -> dict[str, object]:
        result = self._call("/maintenance/status", {})
        return {
            "backend": "EtcdStore",
            "endpoints": [f"{c.host}:{c.port}" for c in self._clients],
            "version": result.get("version"),
            "revision": self._header_revision(result),
        }

    def close(self) -> None:
        for client in self._clients:
            client.session.close()
