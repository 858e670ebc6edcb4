"""Follow Envoy's JSON access log and turn each line into an L7 record.

A plain file, polled: the file logger is part of stock Envoy, costs Envoy nothing
on the request path, and a reader that is slow or gone never blocks it (a FIFO
would). The file is rotated by the reader (rename, then ``/reopen_logs``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable

from ...logs import get_logger
from ..records import DENIED, ERROR, FORWARDED, L7Record, split_address
from .admin import EnvoyAdmin

log = get_logger("proxy")

ROTATE_BYTES = 16 * 1024 * 1024


def record_from_line(line: str) -> L7Record | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    src, sport = split_address(str(doc.get("src") or ""))
    dst, dport = split_address(str(doc.get("dst") or ""))
    details = str(doc.get("details") or "")
    status = doc.get("status")
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = 0
    if details.startswith("rbac_access_denied"):
        verdict = DENIED
    elif status == 0 or (doc.get("flags") not in (None, "-", "")):
        verdict = ERROR
    else:
        verdict = FORWARDED
    fields = {
        "method": doc.get("method"),
        "path": doc.get("path"),
        "host": doc.get("host"),
        "status": status,
        "protocol": doc.get("protocol"),
    }
    grpc = doc.get("grpc_status")
    if grpc not in (None, "-", ""):
        fields["grpc_status"] = grpc
    try:
        when = float(doc.get("start") or 0)
    except (TypeError, ValueError):
        when = 0.0
    return L7Record("http", str(doc.get("direction") or ""), src, sport, dst, dport, verdict,
                    when, fields)


class AccessLogReader:
    def __init__(self, path: str, admin: EnvoyAdmin,
                 on_record: Callable[[L7Record], None], interval: float = 0.05) -> None:
        self.path = path
        self.admin = admin
        self.on_record = on_record
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cpy-envoy-accesslog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _run(self) -> None:
        f = None
        inode = None
        buf = b""
        # Lines written before we started are history, not news.
        try:
            st = os.stat(self.path)
            inode, start = st.st_ino, st.st_size
        except FileNotFoundError:
            start = 0
        while not self._stop.is_set():
            try:
                if f is None:
                    try:
                        f = open(self.path, "rb")  # noqa: SIM115 - held across polls
                    except FileNotFoundError:
                        self._stop.wait(self.interval)
                        continue
                    st = os.fstat(f.fileno())
                    if st.st_ino == inode:
                        f.seek(min(start, st.st_size))
                    inode = st.st_ino
                chunk = f.read(1 << 20)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        record = record_from_line(line.decode("utf-8", "replace"))
                        if record is not None:
                            self.on_record(record)
                    continue
                # At the end: rotate when big, reopen when replaced.
                pos = f.tell()
                if pos > ROTATE_BYTES:
                    os.replace(self.path, self.path + ".1")
                    try:
                        self.admin.reopen_logs()
                    except OSError:
                        pass
                try:
                    st = os.stat(self.path)
                    if st.st_ino != inode or st.st_size < pos:
                        f.close()
                        f, start = None, 0
                        inode = None
                        continue
                except FileNotFoundError:
                    pass
                self._stop.wait(self.interval)
            except Exception:  # noqa: BLE001 - the reader must keep reading
                log.exception("access log reader failed")
                self._stop.wait(1)
        if f is not None:
            f.close()
