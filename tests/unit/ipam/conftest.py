"""Fixtures for the IPAM tests: a fresh embedded store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cilium_py.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(None, str(tmp_path))
    yield s
    s.close()
