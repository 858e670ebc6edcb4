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


@bp.get("/v1/bpf/drops")
def bpf_drops() -> Any:
    return jsonify(_datapath().drop_counters())


@bp.get("/v1/bpf/ipcache")
def bpf_ipcache() -> Any:
    return jsonify(_datapath().ipcache_entries())
