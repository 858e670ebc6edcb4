"""Fixtures for the CNI end-to-end tests: the libcni driver and a lab around the agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cni_e2e import CNILab, DriverUnavailable, build_driver

from tests.conftest import RunningAgent, require_root


@pytest.fixture(scope="session")
def libcni_driver() -> str:
    require_root()
    try:
        return build_driver()
    except DriverUnavailable as exc:
        pytest.skip(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def cni_lab(agent: RunningAgent, libcni_driver: str, workdir: str) -> Iterator[CNILab]:
    lab = CNILab(agent, libcni_driver, workdir)
    try:
        yield lab
    finally:
        lab.cleanup()
