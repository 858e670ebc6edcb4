"""Serving the driver with gunicorn on dockerd's plugin socket.

It reuses the agent's :class:`~cilium_py.agent.server.AgentServer` (one gthread worker:
the driver's state and its lock live in one process) and changes only what differs: the
process name and the socket's mode. dockerd discovers the plugin by the socket's path
alone (``/run/docker/plugins/<name>.sock``), so nothing else needs configuring.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..agent.server import AgentServer

DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/cilium-py.sock"


class PluginServer(AgentServer):
    def __init__(self, app_factory: Callable[[], Any], socket_path: str, threads: int) -> None:
        super().__init__(app_factory, socket_path, threads)

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "cilium-py-docker")
        # dockerd (root) is the only client; keep the socket root-only.
        self.cfg.set("umask", 0o177)
        # A libnetwork call blocks a container start: fail fast rather than hang.
        self.cfg.set("timeout", 60)


def prepare_plugin_socket(socket_path: str) -> None:
    """Create the directory and remove a stale socket left by a killed predecessor.

    gunicorn refuses to bind over an existing path; a plugin that restarts on its own
    must take its socket back.
    """
    os.makedirs(os.path.dirname(os.path.abspath(socket_path)), mode=0o755, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
