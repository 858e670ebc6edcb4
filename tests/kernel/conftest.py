"""Fixtures shared by the kernel tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import netns as tn


@pytest.fixture
def node_topology() -> Iterator[tn.NodeTopology]:
    """A test-made node namespace with two endpoint namespaces wired to it (no agent)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = tn.build_node(2)
    try:
        yield topo
    finally:
        topo.cleanup()
