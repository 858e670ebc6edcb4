"""``main.run`` in-process: the last-resort error path and stdout discipline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cilium_py.cni import commands, main
from cilium_py.cni.log import Log


def test_unexpected_exception_becomes_code_100(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    def boom(*_: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setitem(commands.HANDLERS, "DEL", boom)
    out = io.StringIO()
    log = Log(str(tmp_path / "cni.log"))
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    rc = main.run(env, b'{"cniVersion": "0.4.0", "name": "n", "type": "t"}', out, log)
    log.close()
    assert rc == 1
    doc = json.loads(out.getvalue())
    assert (doc["cniVersion"], doc["code"]) == ("0.4.0", 100)
    assert "KeyError" in doc["msg"]
    record = json.loads((tmp_path / "cni.log").read_text().splitlines()[-1])
    assert "Traceback" in record["trace"]


def test_main_keeps_accidental_prints_off_stdout(monkeypatch: pytest.MonkeyPatch,
                                                 capfd: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    def chatty(*_: object) -> None:
        print("debugging output that must not corrupt the result")

    monkeypatch.setitem(commands.HANDLERS, "DEL", chatty)
    monkeypatch.setenv("CNI_COMMAND", "DEL")
    monkeypatch.setenv("CNI_CONTAINERID", "c1")
    monkeypatch.setenv("CNI_IFNAME", "eth0")
    monkeypatch.setenv(main.LOG_ENV, str(tmp_path / "cni.log"))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"cniVersion": "1.0.0"}')))
    assert main.main() == 0
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "debugging output" in captured.err
