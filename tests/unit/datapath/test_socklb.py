"""Socket LB's option and start-up decisions (datapath/socklb.py, Agent._start_socket_lb),
without a kernel: which cgroup a setting names, and what a failure does to the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cilium_py.agent.agent import Agent
from cilium_py.config import AgentConfig, load_config
from cilium_py.datapath import socklb
from cilium_py.datapath.loader import DatapathError

MOUNTINFO = """\
24 1 0:22 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_option_spellings() -> None:
    assert load_config([], environ={}).socket_lb_cgroup == "auto"
    assert load_config(["--socket-lb-cgroup", "none"], environ={}).socket_lb_cgroup is None
    env = {"CILIUM_PY_SOCKET_LB_CGROUP": "off"}
    assert load_config([], environ=env).socket_lb_cgroup is None
    cfg = load_config(["--socket-lb-cgroup", "/sys/fs/cgroup/unified/x"], environ=env)
    assert cfg.socket_lb_cgroup == "/sys/fs/cgroup/unified/x"  # a flag beats the env


def test_cgroup2_mount_is_found_in_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert socklb.cgroup2_mount(str(info)) == "/sys/fs/cgroup/unified"
    info.write_text(MOUNTINFO.splitlines()[0] + "\n")
    assert socklb.cgroup2_mount(str(info)) is None


def test_resolve_refuses_what_is_not_a_cgroup2_directory(tmp_path: Path) -> None:
    assert socklb.resolve_cgroup(None) is None
    with pytest.raises(DatapathError, match="not a cgroup v2 directory"):
        socklb.resolve_cgroup(str(tmp_path))
    with pytest.raises(DatapathError, match="not a cgroup v2 directory"):
        socklb.resolve_cgroup(str(tmp_path / "missing"))


def test_hook_attach_types_are_the_kernels() -> None:
    bcc = pytest.importorskip("bcc")
    for hook in socklb.HOOKS:
        kind = "UDP" if hook.name[:-1] in ("sendmsg", "recvmsg") else "INET"
        name = f"CGROUP_{kind}{hook.name[-1]}_{hook.name[:-1].upper()}"
        assert getattr(bcc.BPFAttachType, name) == hook.attach_type, hook


class FakeDatapath:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, Any]] = []

    def attach_socket_lb(self, cgroup: str) -> dict[str, Any]:
        self.calls.append(("attach", cgroup))
        if self.error is not None:
            raise self.error
        return {"cgroup": cgroup}

    def detach_socket_lb(self) -> int:
        self.calls.append(("detach", None))
        return 8

    def socket_lb_status(self) -> dict[str, Any]:
        return {"cgroup": None, "hooks": {}}


def _agent(tmp_path: Path, setting: str | None, dp: FakeDatapath) -> Agent:
    cfg = AgentConfig(state_dir=str(tmp_path), socket=str(tmp_path / "s.sock"),
                      socket_lb_cgroup=setting)
    agent = Agent(cfg)
    agent.datapath = dp  # type: ignore[assignment]
    return agent


def test_auto_failure_leaves_the_agent_running_and_degraded(tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(socklb, "cgroup2_mount", lambda: "/sys/fs/cgroup/unified")
    agent = _agent(tmp_path, "auto", FakeDatapath(DatapathError("verifier said no")))
    agent._start_socket_lb()
    agent.node_started = True
    probe = agent._socket_lb_health()
    assert probe == {"status": "degraded", "message": "verifier said no"}


def test_explicit_cgroup_failure_stops_the_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(socklb, "resolve_cgroup", lambda setting: setting)
    dp = FakeDatapath(DatapathError("EPERM"))
    with pytest.raises(DatapathError, match="EPERM"):
        _agent(tmp_path, "/sys/fs/cgroup/unified/mine", dp)._start_socket_lb()
    assert dp.calls == [("attach", "/sys/fs/cgroup/unified/mine")]


def test_none_detaches_what_a_previous_agent_attached(tmp_path: Path) -> None:
    dp = FakeDatapath()
    agent = _agent(tmp_path, None, dp)
    agent._start_socket_lb()
    assert dp.calls == [("detach", None)]
    agent.node_started = True
    assert agent._socket_lb_health()["message"].startswith("disabled")
