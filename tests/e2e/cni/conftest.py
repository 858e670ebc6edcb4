"""Fixtures for the CNI end-to-end tests: the libcni driver and a lab around the agent.

One agent per test module (``module_agent``, tests/conftest.py): each CNI test adds and
deletes its own containers, so they need not pay for an agent start each (about 20 starts
in these modules). Isolation comes from ``CNILab.cleanup`` instead: it deletes the lab's
namespaces, then ``reset_agent`` removes every policy rule and endpoint. A test that
stops the agent uses ``private_cni_lab``, with an agent of its own.
"""

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


def _lab(agent: RunningAgent, driver: str, workdir: str) -> Iterator[CNILab]:
    lab = CNILab(agent, driver, workdir)
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def cni_lab(module_agent: RunningAgent, libcni_driver: str, workdir: str) -> Iterator[CNILab]:
    if module_agent.proc.poll() is not None:
        pytest.fail(f"the module's agent exited ({module_agent.proc.returncode}); "
                    f"tests that stop it use private_cni_lab:\n{module_agent.log()[-3000:]}")
    yield from _lab(module_agent, libcni_driver, workdir)


@pytest.fixture
def private_cni_lab(agent: RunningAgent, libcni_driver: str, workdir: str) -> Iterator[CNILab]:
    """For tests that stop or restart the agent."""
    yield from _lab(agent, libcni_driver, workdir)
