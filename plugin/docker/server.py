"""Serving the driver with gunicorn on dockerd's plugin socket.

It is :class:`~cilium_py.unixserver.UnixSocketServer`, as the agent's API is (one gthread
worker: the driver's state and its lock live in one process), with only what differs: the
process name, the socket's mode and a shorter timeout. dockerd discovers the plugin by
the socket's path alone (``/run/docker/plugins/<name>.sock``), so nothing else needs
configuring.
"""

from __future__ import annotations

import os

from ..unixserver import UnixSocketServer

DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/cilium-py.sock"


class PluginServer(UnixSocketServer):
    proc_name = "cilium-py-docker"
    # dockerd (root) is the only client; keep the socket root-only.
    umask = 0o177
    # A libnetwork call blocks a container start: fail fast rather than hang.
    timeout = 60


def prepare_plugin_socket(socket_path: str) -> None:
    """Create the directory and remove a stale socket left by a killed predecessor.

    gunicorn refuses to bind over an existing path; a plugin that restarts on its own
    must take its socket back.
    """
    os.makedirs(os.path.dirname(os.path.abspath(socket_path)), mode=0o755, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
