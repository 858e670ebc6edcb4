"""Envoy's bootstrap and route files, as JSON documents. Pure.

Per direction one transparent listener on the wildcard address of its proxy port
(IPv4 and IPv6), the ``original_dst`` listener filter, and an HTTP connection
manager whose routes come from a file. The only route sends everything to an
``ORIGINAL_DST`` cluster and carries the direction's RBAC rules; a 403 from RBAC
becomes ``Access denied`` (Envoy turns it into gRPC status 7 for gRPC calls). The
downstream codec detects HTTP/1.x or HTTP/2 (prior knowledge, as gRPC speaks it), and
the upstream speaks what the downstream spoke.

Upstream connections to endpoints leave from the client's own address (the
``original_src`` HTTP filter: IP_TRANSPARENT bind, SO_MARK); connections from the
egress listener to addresses outside the endpoint pools leave from the node's address
(a second filter chain without it), marked all the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..marks import MARK_FROM_PROXY_EGRESS, MARK_FROM_PROXY_INGRESS
from ..redirects import EGRESS, INGRESS

SO_MARK = 36
SOL_SOCKET = 1
_T = "type.googleapis.com/"
_HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

ACCESS_DENIED_BODY = "Access denied\r\n"

#: What the access log records per request (read by accesslog.py).
ACCESS_LOG_FIELDS = {
    "start": "%START_TIME(%s.%6f)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "host": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "protocol": "%PROTOCOL%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "src": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "dst": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "duration_ms": "%DURATION%",
}


@dataclass(frozen=True)
class EnvoyPaths:
    """Where one agent's Envoy keeps its files (all under one directory)."""

    root: str

    @property
    def bootstrap(self) -> str:
        return os.path.join(self.root, "bootstrap.json")

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.root, "admin.sock")

    @property
    def access_log(self) -> str:
        return os.path.join(self.root, "access.log")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.root, "envoy.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "envoy.log")

    def routes(self, name: str) -> str:
        return os.path.join(self.root, f"routes-{name}.json")


def route_names(direction: str) -> tuple[str, ...]:
    """Route configurations of one direction's listener (one per filter chain)."""
    return (INGRESS,) if direction == INGRESS else (EGRESS, EGRESS + "-world")


def _cluster_name(route: str) -> str:
    return f"original-dst-{route}"


def _mark(direction: str) -> int:
    return MARK_FROM_PROXY_INGRESS if direction == INGRESS else MARK_FROM_PROXY_EGRESS


def _hcm(paths: EnvoyPaths, direction: str, route: str, original_src: bool) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{
        "name": "envoy.filters.http.rbac",
        "typed_config": {"@type": _T + "envoy.extensions.filters.http.rbac.v3.RBAC"},
    }]
    if original_src:
        filters.append({
            "name": "envoy.filters.http.original_src",
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.original_src.v3.OriginalSrc",
                "mark": _mark(direction),
            },
        })
    filters.append({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router",
                         "suppress_envoy_headers": True},
    })
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": route,
            "codec_type": "AUTO",
            "generate_request_id": False,
            "server_header_transformation": "PASS_THROUGH",
            "http_protocol_options": {"accept_http_10": True},
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "rds": {
                "route_config_name": route,
                "config_source": {"path_config_source": {"path": paths.routes(route)},
                                  "resource_api_version": "V3"},
            },
            "http_filters": filters,
            "local_reply_config": {"mappers": [{
                "filter": {"status_code_filter": {"comparison": {
                    "op": "EQ", "value": {"default_value": 403, "runtime_key": "cpy.403"}}}},
                "body": {"inline_string": ACCESS_DENIED_BODY},
                "body_format_override": {
                    "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                    "content_type": "text/plain"},
            }]},
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": paths.access_log,
                    "log_format": {"json_format": {**ACCESS_LOG_FIELDS,
                                                   "direction": direction}},
                },
            }],
        },
    }


def _listener(paths: EnvoyPaths, direction: str, port: int,
              pool_prefixes: Iterable[tuple[str, int]]) -> dict[str, Any]:
    pools = [{"address_prefix": a, "prefix_len": n} for a, n in pool_prefixes]
    if direction == INGRESS:
        chains = [{"filters": [_hcm(paths, direction, INGRESS, True)]}]
    else:
        chains = [{"filters": [_hcm(paths, direction, EGRESS + "-world", False)]}]
        if pools:
            chains.insert(0, {"filter_chain_match": {"prefix_ranges": pools},
                              "filters": [_hcm(paths, direction, EGRESS, True)]})
    return {
        "name": f"{direction}-http",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "additional_addresses": [{"address": {"socket_address": {
            "address": "::", "port_value": port, "ipv4_compat": False}}}],
        "transparent": True,
        "freebind": True,
        "listener_filters": [{
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"},
        }],
        "filter_chains": chains,
    }


def _cluster(route: str, direction: str, original_src: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": _cluster_name(route),
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        "cleanup_interval": "60s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {"http_protocol_options": {},
                                                   "http2_protocol_options": {}},
            }},
    }
    if not original_src:
        cluster["upstream_bind_config"] = {
            "source_address": {"address": "0.0.0.0", "port_value": 0},
            "socket_options": [{"level": SOL_SOCKET, "name": SO_MARK,
                                "int_value": _mark(direction), "state": "STATE_PREBIND"}],
        }
    return cluster


def bootstrap(paths: EnvoyPaths, ports: Mapping[str, int],
              pool_prefixes: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    """The static bootstrap: ``ports`` maps direction -> proxy port."""
    pools = list(pool_prefixes)
    listeners, clusters = [], []
    for direction in (INGRESS, EGRESS):
        if direction not in ports:
            continue
        listeners.append(_listener(paths, direction, ports[direction], pools))
        for route in route_names(direction):
            clusters.append(_cluster(route, direction, not route.endswith("-world")))
    return {
        "node": {"id": "cilium-py", "cluster": "cilium-py"},
        "admin": {"address": {"pipe": {"path": paths.admin_socket, "mode": 0o600}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "overload.global_downstream_max_connections": 100000}}]},
    }


def route_config(route: str, rbac_rules: Mapping[str, Any], version: str) -> dict[str, Any]:
    """One route file: everything to the original destination, under ``rbac_rules``."""
    return {
        "version_info": version,
        "resources": [{
            "@type": _T + "envoy.config.route.v3.RouteConfiguration",
            "name": route,
            "virtual_hosts": [{
                "name": route,
                "domains": ["*"],
                "routes": [{
                    "name": route,
                    "match": {"prefix": ""},
                    "route": {"cluster": _cluster_name(route), "timeout": "0s"},
                    "typed_per_filter_config": {"envoy.filters.http.rbac": {
                        "@type": _T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
                        "rbac": {"rules": dict(rbac_rules)},
                    }},
                }],
            }],
        }],
    }
