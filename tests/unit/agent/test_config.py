"""Configuration precedence: defaults < file < environment < flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cilium_py.config import AgentConfig, ConfigError, load_config


def test_defaults() -> None:
    cfg = load_config([], environ={})
    assert cfg.state_dir == "/var/lib/cilium-py"
    assert cfg.socket == "/var/run/cilium-py/cilium.sock"
    assert cfg.bpf_root == "/sys/fs/bpf/cilium-py"
    assert cfg.store == ""
    assert cfg.log_format == "json"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.json"
    cfg_file.write_text(json.dumps({"state-dir": "/from/file", "socket": "/file.sock",
                                    "log_format": "console", "bpf-root": "/sys/fs/bpf/file"}))
    env = {"CILIUM_PY_SOCKET": "/env.sock", "CILIUM_PY_BPF_ROOT": "/sys/fs/bpf/env"}
    cfg = load_config(["--config", str(cfg_file), "--bpf-root", "/sys/fs/bpf/flag"], environ=env)
    assert cfg.state_dir == "/from/file"  # file only
    assert cfg.log_format == "console"  # file, underscore spelling
    assert cfg.socket == "/env.sock"  # env beats file
    assert cfg.bpf_root == "/sys/fs/bpf/flag"  # flag beats env and file


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.json"
    cfg_file.write_text(json.dumps({"store": "sqlite:///tmp/x.db"}))
    cfg = load_config([], environ={"CILIUM_PY_CONFIG": str(cfg_file)})
    assert cfg.store == "sqlite:///tmp/x.db"


def test_unknown_key_in_file_names_it(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.json"
    cfg_file.write_text(json.dumps({"state-dir": "/x", "bogus-key": 1}))
    with pytest.raises(ConfigError) as err:
        load_config(["--config", str(cfg_file)], environ={})
    assert err.value.key == "bogus-key"


def test_broken_file_and_bad_values(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.json"
    cfg_file.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(["--config", str(cfg_file)], environ={})
    with pytest.raises(ConfigError) as err:
        load_config(["--log-format", "xml"], environ={})
    assert err.value.key == "log-format"
    with pytest.raises(ConfigError) as err:
        load_config([], environ={"CILIUM_PY_MASQUERADE": "maybe"})
    assert err.value.key == "masquerade"


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_config(["--no-such-flag"], environ={})
    assert exc.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_families_can_be_turned_off() -> None:
    cfg = load_config(["--ipv6-pool", "none"], environ={})
    assert cfg.ipv6_pool is None and cfg.ipv4_pool
    with pytest.raises(ConfigError):
        load_config(["--ipv6-pool", "none", "--ipv4-pool", "none"], environ={})


def test_to_dict_uses_flag_names() -> None:
    assert "state-dir" in AgentConfig().to_dict()
