"""A Flask test client over a real Agent with a temporary store (no socket, no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilium_py.agent.agent import Agent
from cilium_py.api.app import create_app
from cilium_py.config import AgentConfig


@pytest.fixture
def api_agent(tmp_path: Path) -> Agent:
    cfg = AgentConfig(state_dir=str(tmp_path), socket=str(tmp_path / "s.sock"))
    return Agent(cfg)


@pytest.fixture
def client(api_agent: Agent):
    app = create_app(api_agent)
    return app.test_client()
