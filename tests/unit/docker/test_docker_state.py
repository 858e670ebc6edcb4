"""The driver's state file: atomic, recoverable, and never fatal when damaged."""

from __future__ import annotations

import json

import pytest

from cilium_py.docker.state import DriverState


def test_changes_survive_a_restart(tmp_path):
    path = str(tmp_path / "s.json")
    state = DriverState(path)
    with state.edit() as doc:
        doc["networks"]["n1"] = {"ipv4": ["10.201.0.0/16"]}
        doc["endpoints"]["e1"] = {"network": "n1"}
    again = DriverState(path)
    assert again.network("n1") == {"ipv4": ["10.201.0.0/16"]}
    assert again.endpoints_of("n1") == ["e1"]


def test_a_failed_edit_changes_nothing(tmp_path):
    state = DriverState(str(tmp_path / "s.json"))
    with pytest.raises(RuntimeError):
        with state.edit() as doc:
            doc["networks"]["n1"] = {}
            raise RuntimeError("half-way")
    assert state.network("n1") is None


@pytest.mark.parametrize("content", ["{broken", '{"version": 99}', "[]"])
def test_a_damaged_file_starts_empty(tmp_path, content):
    path = tmp_path / "s.json"
    path.write_text(content)
    state = DriverState(str(path))
    assert state.snapshot()["endpoints"] == {}
    with state.edit() as doc:
        doc["pools"]["p"] = 1
    assert json.loads(path.read_text())["pools"] == {"p": 1}


def test_no_temporary_files_are_left(tmp_path):
    state = DriverState(str(tmp_path / "s.json"))
    for i in range(3):
        with state.edit() as doc:
            doc["pools"][str(i)] = i
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_accessors_return_copies(tmp_path):
    state = DriverState(None)
    with state.edit() as doc:
        doc["endpoints"]["e"] = {"ports": []}
    state.endpoint("e")["ports"].append(1)
    assert state.endpoint("e") == {"ports": []}
