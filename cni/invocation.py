"""What one exec of the plugin was asked: the CNI_* environment and the stdin config.

Pure parsing with the spec's error codes: a missing or malformed variable is code 4,
undecodable stdin code 6, a config that decodes but makes no sense code 7, a field we
refuse code 2. Nothing here talks to the agent, so every rule is unit-testable.
"""

from __future__ import annotations

from ..client import codec
from . import version
from .errors import (
    DECODING_FAILURE,
    INVALID_ENV,
    INVALID_NETWORK_CONFIG,
    UNSUPPORTED_FIELD,
    CNIError,
)

# typing, dataclasses and collections.abc cost milliseconds of start-up on every exec;
# annotations are strings here, so the names are only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
DEFAULT_AGENT_SOCKET = "/var/run/cilium-py/cilium.sock"
DEFAULT_LOG_FILE = "/var/log/cilium-py/cni.log"
LOG_LEVELS = ("debug", "info", "warning", "error")

# Which variables each command cannot do without. DEL needs no netns (the runtime may
# have torn it down already); GC and STATUS concern the network, not one container.
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
IFNAMSIZ = 16


class Environment:
    """The CNI_* variables of this exec."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path")

    def __init__(self, command: str, container_id: str = "", netns: str = "",
                 ifname: str = "", args: str = "", path: str = "") -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path


def _check_container_id(value: str) -> str | None:
    if not value[:1].isalnum() or not value.isascii() or not _ID_CHARS.issuperset(value):
        return "must start with a letter or digit and hold only letters, digits, _ . -"
    return None


def _check_ifname(value: str) -> str | None:
    if len(value) >= IFNAMSIZ:
        return f"is longer than {IFNAMSIZ - 1} characters"
    if value in (".", "..") or any(c in "/:" or c.isspace() for c in value):
        return "is not a valid interface name"
    return None


def read_environment(environ: Mapping[str, str]) -> Environment:
    """The CNI_* variables, checked for the command at hand (code 4 names the culprits)."""
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"CNI_COMMAND {command!r} is not one of {list(COMMANDS)}")
    env = Environment(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=environ.get("CNI_ARGS", ""),
        path=environ.get("CNI_PATH", ""),
    )
    missing = [name for name in _REQUIRED.get(command, ()) if not environ.get(name)]
    if missing:
        raise CNIError(INVALID_ENV, f"required environment variables missing: {missing}",
                       f"{command} needs {list(_REQUIRED[command])}")
    problems = []
    if env.container_id and (why := _check_container_id(env.container_id)):
        problems.append(f"CNI_CONTAINERID {why}")
    if env.ifname and (why := _check_ifname(env.ifname)):
        problems.append(f"CNI_IFNAME {env.ifname!r} {why}")
    if env.netns and not env.netns.startswith("/"):
        problems.append("CNI_NETNS must be an absolute path")
    if problems:
        raise CNIError(INVALID_ENV, "invalid environment variables: " + "; ".join(problems))
    return env


class NetConf:
    """The fields of the network config that this plugin reads."""

    def __init__(
        self,
        cni_version: str,
        name: str = "",
        type: str = "",
        agent_socket: str = DEFAULT_AGENT_SOCKET,
        log_file: str | None = DEFAULT_LOG_FILE,
        log_level: str = "info",
        args: dict[str, Any] | None = None,
        dns: dict[str, Any] | None = None,
        prev_result: dict[str, Any] | None = None,
        valid_attachments: list[tuple[str, str]] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self.cni_version = cni_version
        self.name = name
        self.type = type
        self.agent_socket = agent_socket
        self.log_file = log_file
        self.log_level = log_level
        self.args = args or {}
        self.dns = dns
        self.prev_result = prev_result
        self.valid_attachments = valid_attachments
        self.raw = raw or {}


def peek_version(data: bytes) -> str:
    """Best-effort ``cniVersion`` of stdin, used only to word an error in the right version."""
    try:
        doc = codec.loads(data)
        v = doc.get("cniVersion") if isinstance(doc, dict) else None
        return v if v in version.SUPPORTED else version.LATEST
    except ValueError:
        return version.LATEST


def decode(data: bytes) -> dict[str, Any]:
    """stdin -> dict; anything that is not a JSON object is the spec's code 6."""
    try:
        doc = codec.loads(data)
    except ValueError as exc:
        raise CNIError(DECODING_FAILURE, "cannot decode network config from stdin",
                       str(exc)) from None
    if not isinstance(doc, dict):
        raise CNIError(DECODING_FAILURE, "network config on stdin is not a JSON object")
    return doc


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise CNIError(INVALID_NETWORK_CONFIG, f"{key!r} must be a string")
    return value


def _opt_dict(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, dict):
        raise CNIError(INVALID_NETWORK_CONFIG, f"{key!r} must be an object")
    return value


def _attachments(doc: dict[str, Any]) -> list[tuple[str, str]] | None:
    # libcni sends both spellings (the spec once named it cni.dev/attachments).
    items = doc.get("cni.dev/valid-attachments", doc.get("cni.dev/attachments"))
    if items is None:
        return None
    if not isinstance(items, list):
        raise CNIError(INVALID_NETWORK_CONFIG, "'cni.dev/valid-attachments' must be a list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise CNIError(INVALID_NETWORK_CONFIG,
                           "each valid attachment is {\"containerID\": ..., \"ifname\": ...}",
                           f"got {item!r}")
        out.append((item["containerID"], item["ifname"]))
    return out


def parse_netconf(doc: dict[str, Any]) -> NetConf:
    """Validate the config; the version is checked here so no later step needs to."""
    raw_version = doc.get("cniVersion")
    cni_version = version.require_supported(
        version.DEFAULT_FOR_MISSING if raw_version in (None, "") else raw_version)
    ipam = doc.get("ipam")
    if isinstance(ipam, dict) and ipam.get("type"):
        raise CNIError(UNSUPPORTED_FIELD, f"unsupported field ipam.type={ipam['type']!r}",
                       "cilium-py allocates addresses in the agent; remove the ipam section")
    socket_path = _opt_str(doc, "agent-socket") or DEFAULT_AGENT_SOCKET
    if not socket_path.startswith("/"):
        raise CNIError(INVALID_NETWORK_CONFIG, "'agent-socket' must be an absolute path")
    log_file = doc.get("log-file", DEFAULT_LOG_FILE)
    if log_file is not None and not isinstance(log_file, str):
        raise CNIError(INVALID_NETWORK_CONFIG, "'log-file' must be a path or null")
    log_level = _opt_str(doc, "log-level") or "info"
    if log_level not in LOG_LEVELS:
        raise CNIError(INVALID_NETWORK_CONFIG, f"'log-level' must be one of {list(LOG_LEVELS)}")
    return NetConf(
        cni_version=cni_version,
        name=_opt_str(doc, "name") or "",
        type=_opt_str(doc, "type") or "",
        agent_socket=socket_path,
        log_file=log_file or None,
        log_level=log_level,
        args=_opt_dict(doc, "args") or {},
        dns=_opt_dict(doc, "dns"),
        prev_result=_opt_dict(doc, "prevResult"),
        valid_attachments=_attachments(doc),
        raw=doc,
    )
