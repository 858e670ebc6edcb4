"""Structured logs: one JSON object a line with time, level, subsystem, message, fields."""

from __future__ import annotations

import io
import json

from cilium_py.logs import get_logger, setup_logging


def test_json_lines_carry_fields() -> None:
    buf = io.StringIO()
    setup_logging("json", "info", stream=buf)
    get_logger("endpoint").info("endpoint created", extra={"fields": {"id": "abc", "ifindex": 7}})
    get_logger("endpoint").debug("hidden below the level")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "info"
    assert doc["subsystem"] == "endpoint"
    assert doc["message"] == "endpoint created"
    assert doc["fields"] == {"id": "abc", "ifindex": 7}
    assert doc["time"].endswith("Z")


def test_console_format_is_human() -> None:
    buf = io.StringIO()
    setup_logging("console", "debug", stream=buf)
    get_logger("ipam").warning("pool low", extra={"fields": {"free": 3}})
    line = buf.getvalue().strip()
    assert "WARNING" in line and "ipam: pool low" in line and "free=3" in line
    assert not line.startswith("{")
