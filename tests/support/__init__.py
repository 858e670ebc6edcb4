"""Reusable helpers for tests (network namespaces, traffic, a datapath in a worker)."""
