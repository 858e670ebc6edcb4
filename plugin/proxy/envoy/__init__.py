"""Envoy as the HTTP/gRPC proxy: bootstrap and route files, RBAC, supervision, access log.

Envoy runs with a static bootstrap (listeners and clusters never change while it
runs, since listener changes drain connections) and takes every policy change
through route files (``path_config_source``) replaced by atomic rename, which
changes verdicts without touching established connections.
"""
