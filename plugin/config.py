"""Agent configuration: defaults < config file < environment < flags.

Every setting has one name used everywhere: ``--state-dir`` on the command line,
``CILIUM_PY_STATE_DIR`` in the environment and ``state-dir`` (or ``state_dir``) in the
JSON config file. Keeping the three spellings derived from one table is what makes the
precedence testable and keeps the docs honest.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "CILIUM_PY_"
DEFAULT_SOCKET = "/var/run/cilium-py/cilium.sock"


class ConfigError(Exception):
    """A setting is unknown or has a bad value; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value)
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {text!r}")
        return text

    return parse


def _optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return None if text.lower() in ("", "none", "off", "disabled") else text


def _map_size(value: Any) -> int:
    number = int(value)
    if not 1 <= number <= 1 << 24:
        raise ValueError(f"a map size is 1..{1 << 24} entries, not {number}")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be a number of seconds > 0, not {value!r}")
    return number


def _setting(default: Any, parse: Callable[[Any], Any], help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass
class AgentConfig:
    """The agent's settings; field names map to flags, env vars and file keys."""

    state_dir: str = _setting("/var/lib/cilium-py", str, "state directory (embedded store)")
    socket: str = _setting(DEFAULT_SOCKET, str, "path of the agent's API unix socket")
    bpf_root: str = _setting("/sys/fs/bpf/cilium-py", str, "pin path for BPF maps")
    store: str = _setting(
        "", str, "store URL: empty (embedded store in the state dir), sqlite:///PATH or "
        "etcd://HOST:PORT[,HOST:PORT...]"
    )
    etcd_ca_file: str | None = _setting(
        None, _optional_str, "etcd: CA bundle that signs the etcd servers (turns TLS on)"
    )
    etcd_cert_file: str | None = _setting(
        None, _optional_str, "etcd: client certificate (with --etcd-key-file)"
    )
    etcd_key_file: str | None = _setting(None, _optional_str, "etcd: client certificate key")
    l7_proxy: bool = _setting(
        True, _bool, "run Envoy for HTTP/gRPC L7 rules (false: L7 ports are enforced at L4)"
    )
    kafka_proxy: bool = _setting(
        True, _bool, "run the Kafka proxy for Kafka L7 rules (false: enforced at L4)"
    )
    log_format: str = _setting("json", _choice("json", "console"), "json or console")
    log_level: str = _setting(
        "info", _choice("debug", "info", "warning", "error"), "minimum log level"
    )
    ipv4_pool: str | None = _setting(
        "10.200.0.0/16", _optional_str, "IPv4 endpoint pool; 'none' turns IPv4 off"
    )
    ipv6_pool: str | None = _setting(
        "fd10:200::/112", _optional_str, "IPv6 endpoint pool; 'none' turns IPv6 off"
    )
    router_device: str = _setting("cilium_host", str, "device holding the router addresses")
    masquerade: bool = _setting(True, _bool, "masquerade traffic leaving the pools")
    enforcement: str = _setting(
        "default", _choice("default", "always", "never"), "policy enforcement mode"
    )
    allow_host_ingress: bool = _setting(
        True, _bool, "let the host (reserved:host) reach local endpoints"
    )
    conntrack_gc_interval: float = _setting(
        30.0, _positive_float, "seconds between conntrack garbage collection runs (deletes "
        "expired entries)"
    )
    socket_lb_cgroup: str | None = _setting(
        "auto", _optional_str, "balance the node's own sockets (processes in the agent's "
        "network namespace) at connect/sendmsg, for processes in this cgroup v2 directory "
        "and below: auto (the cgroup v2 root; a failure leaves the agent running, degraded), "
        "a path (a failure stops the agent start) or none"
    )
    threads: int = _setting(16, int, "API worker threads")
    policy_map_size: int = _setting(
        65536, _map_size, "entries of the BPF policy map (all endpoints' policy entries)"
    )
    ipcache_map_size: int = _setting(
        16384, _map_size, "entries of the BPF ipcache (prefix -> identity)"
    )
    endpoint_map_size: int = _setting(4096, _map_size, "entries of the BPF endpoint maps")
    ct_map_size: int = _setting(65536, _map_size, "entries of each BPF conntrack map (per family)")
    kubeconfig: str | None = _setting(
        None, _optional_str, "kubeconfig: fetch pod labels from the Kubernetes API server"
    )
    node_name: str | None = _setting(
        None, _optional_str, "this node's name in the cluster (default: the host name)"
    )
    node_address: str | None = _setting(
        None, _optional_str, "address other nodes reach this one at (default: the address "
        "of the interface holding the default route)"
    )
    tunnel: str = _setting(
        "vxlan", _choice("vxlan", "disabled"),
        "cluster mode: vxlan overlay carrying identities, or disabled (direct routing)"
    )
    node_ipv4_prefix_len: int = _setting(
        24, int, "cluster mode: size of each node's IPv4 range carved from --ipv4-pool"
    )
    node_ipv6_prefix_len: int = _setting(
        120, int, "cluster mode: size of each node's IPv6 range carved from --ipv6-pool"
    )
    node_lease_ttl: int = _setting(
        15, int, "cluster mode: seconds after which a node that stopped refreshing its "
        "registration is gone for the others"
    )
    health_checking: bool = _setting(
        True, _bool, "run a health endpoint and probe endpoints and nodes (GET /v1/health)"
    )
    health_interval: float = _setting(30.0, float, "seconds between health probe rounds")
    prometheus_serve_addr: str | None = _setting(
        None, _optional_str, "serve Prometheus metrics at ADDR:PORT/metrics (off by default; "
        "e.g. 127.0.0.1:9962)"
    )
    docker_labels: bool = _setting(
        True, _bool, "learn container labels from dockerd (waiting for it if it is not up)"
    )
    docker_socket: str = _setting(
        "/var/run/docker.sock", str, "dockerd's API socket, for the container label watcher"
    )

    def to_dict(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


def _settings() -> dict[str, Any]:
    return {f.name: f for f in fields(AgentConfig)}


def _parse_value(name: str, value: Any) -> Any:
    parse = _settings()[name].metadata["parse"]
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(name.replace("_", "-"), str(exc)) from exc


def build_parser(prog: str = "cilium-py-agent") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="cilium-py agent: owns endpoints, identities, policy and the BPF datapath.",
    )
    parser.add_argument("--config", help="JSON config file; flags and environment win over it")
    for name, f in _settings().items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{f.metadata['help']} (default: {f.default!r}; env {ENV_PREFIX}{name.upper()})",
        )
    return parser


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a JSON object")
    known = _settings()
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(str(key), f"unknown setting in {path}")
        out[name] = value
    return out


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Resolve the configuration; raises ConfigError, or SystemExit(2) from argparse."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    config_path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    layers: list[dict[str, Any]] = []
    if config_path:
        layers.append(_read_file(config_path))
    layers.append(
        {
            name: environ[ENV_PREFIX + name.upper()]
            for name in _settings()
            if ENV_PREFIX + name.upper() in environ
        }
    )
    layers.append({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    cfg = AgentConfig()
    for layer in layers:
        for name, value in layer.items():
            setattr(cfg, name, _parse_value(name, value))
    if not cfg.ipv4_pool and not cfg.ipv6_pool:
        raise ConfigError("ipv4-pool", "IPv4 and IPv6 cannot both be turned off")
    return cfg
