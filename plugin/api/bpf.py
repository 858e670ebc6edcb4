"""Read-only views of the pinned BPF maps, for ``cilium-py bpf ...``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from ..errors import Unavailable

bp = Blueprint("bpf", __name__)


def _datapath() -> Any:
    datapath = current_app.config["AGENT"].datapath
    if datapath is None:
        raise Unavailable("the BPF datapath is not running")
    return datapath


@bp.get("/v1/bpf/endpoint")
def bpf_endpoints() -> Any:
    return jsonify(_datapath().endpoint_entries())


@bp.get("/v1/bpf/ct")
def bpf_ct() -> Any:
    return jsonify(_datapath().ct_entries())


@bp.delete("/v1/bpf/ct")
def flush_bpf_ct() -> Any:
    """Delete every conntrack entry (established TCP connections are cut)."""
    return jsonify({"deleted": _datapath().flush_ct()})


@bp.get("/v1/bpf/drops")
def bpf_drops() -> Any:
    return jsonify(_datapath().drop_counters())


@bp.get("/v1/bpf/ipcache")
def bpf_ipcache() -> Any:
    return jsonify(_datapath().ipcache_entries())


@bp.get("/v1/bpf/metrics")
def bpf_metrics() -> Any:
    return jsonify(_datapath().metrics())


@bp.get("/v1/bpf/tunnel")
def bpf_tunnel() -> Any:
    return jsonify(_datapath().tunnel_entries())


@bp.get("/v1/node")
def node() -> Any:
    """The cluster view; a single node without a cluster store is a cluster of one."""
    agent = current_app.config["AGENT"]
    if agent.cluster is None:
        return jsonify({"mode": "single-node", "nodes": []})
    return jsonify(agent.cluster.status())
