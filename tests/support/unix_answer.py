"""A unix socket that takes one request and answers it as a test says: how the clients
are tested against each way an agent can fail to answer (silence, close, junk)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def serve_once(path: str, answer: Callable[[socket.socket], None]) -> Callable[[], None]:
    """Accept one connection on ``path``, read the request, call ``answer``; returns the
    clean-up (join the server thread, close the socket)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def once() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            answer(conn)

    t = threading.Thread(target=once, daemon=True)
    t.start()

    def stop() -> None:
        t.join(5)
        srv.close()

    return stop
