"""Serving the agent's API with gunicorn on the agent's unix socket.

The serving itself is :class:`~cilium_py.unixserver.UnixSocketServer` (one gthread
worker that *is* the agent); this module holds only what is the agent's own: its
process name and the socket directory's mode.
"""

from __future__ import annotations

import os

from ..unixserver import UnixSocketServer


class AgentServer(UnixSocketServer):
    proc_name = "cilium-py-agent"


def prepare_socket_dir(socket_path: str) -> None:
    directory = os.path.dirname(os.path.abspath(socket_path))
    os.makedirs(directory, mode=0o750, exist_ok=True)
