"""Set a Mesos agent up to attach containers through cilium-py.

The Mesos CNI isolator (``--isolation=...,network/cni``) reads one JSON network config
per file from ``--network_cni_config_dir`` and execs the plugin named by its ``type``
from ``--network_cni_plugins_dir``. It runs a single plugin, not a conflist, and parses
only 0.2.0-style results (``ip4``/``ip6``), so the config pins ``cniVersion`` 0.2.0.
Containers join the network by name: ``NetworkInfo.name`` in the task, which Marathon
sets from ``ipAddress.networkName`` (<= 1.4) or ``networks[].name`` (>= 1.5); the
NetworkInfo labels arrive as ``args["org.apache.mesos"]`` and become ``mesos:`` labels.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cilium_py.cni import install as cni_install

NETWORK_NAME = "cilium-py"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# What the Mesos isolator parses; see the module docstring.
MESOS_CNI_VERSION = "0.2.0"


def check_network_name(name: str) -> str:
    """The CNI spec's network name rule; it also keeps the file name inside config_dir."""
    if not name[:1].isalnum() or not name.isascii() or not _NAME_CHARS.issuperset(name):
        raise ValueError(f"invalid network name {name!r}: start with a letter or digit, "
                         "then letters, digits, '_', '.' or '-'")
    return name


def network_config(name: str = NETWORK_NAME, socket_path: str = cni_install.DEFAULT_SOCKET,
                   log_file: str = cni_install.DEFAULT_LOG,
                   cni_version: str | None = MESOS_CNI_VERSION) -> dict[str, Any]:
    """The network config for ``--network_cni_config_dir``."""
    conf: dict[str, Any] = {"name": name}
    if cni_version:
        conf["cniVersion"] = cni_version
    conf.update(cni_install.cilium_plugin_conf(socket_path, log_file))
    return conf


def agent_flags(config_dir: str, plugins_dir: str) -> list[str]:
    """The mesos-agent flags that make it use what ``install`` wrote."""
    return [
        "--isolation=filesystem/linux,docker/runtime,network/cni",
        f"--network_cni_config_dir={config_dir}",
        f"--network_cni_plugins_dir={plugins_dir}",
    ]


def install(config_dir: str, plugins_dir: str, *, name: str = NETWORK_NAME,
            socket_path: str = cni_install.DEFAULT_SOCKET,
            log_file: str = cni_install.DEFAULT_LOG, python: str | None = None
            ) -> list[dict[str, Any]]:
    """Write the plugin launcher and the network config; report each file.

    Idempotent: files already as wanted are left alone (``changed: false``), so it can
    run at every agent start.
    """
    check_network_name(name)
    plugin_path, plugin_changed = cni_install.install_plugin(plugins_dir, python)
    conf_path = os.path.join(config_dir, f"{name}.conf")
    text = json.dumps(network_config(name, socket_path, log_file), indent=2) + "\n"
    conf_changed = cni_install.write_file(conf_path, text, 0o644)
    return [
        {"path": plugin_path, "kind": "plugin", "changed": plugin_changed},
        {"path": conf_path, "kind": "network-config", "changed": conf_changed},
    ]
