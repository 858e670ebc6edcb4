"""Structured logging: one JSON object a line, or a console format for people.

Every record carries ``subsystem`` (the logger name below ``cilium_py``) and any
``fields`` passed via ``extra={"fields": {...}}``, so log lines can be filtered by
machine without parsing prose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ROOT = "cilium_py"


def get_logger(subsystem: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{subsystem}")


def _subsystem(record: logging.LogRecord) -> str:
    name = record.name
    if name.startswith(ROOT + "."):
        return name[len(ROOT) + 1 :]
    if name.startswith("gunicorn"):
        return "server"
    return name


def _timestamp(record: logging.LogRecord) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{base}.{int(record.msecs):03d}Z"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "subsystem": _subsystem(record),
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            doc["fields"] = extra
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=False)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "fields", None) or {}
        kv = " ".join(f"{k}={v}" for k, v in extra.items())
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {_subsystem(record)}: "
            f"{record.getMessage()}"
        )
        if kv:
            line += "  " + kv
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def make_formatter(fmt: str) -> logging.Formatter:
    return ConsoleFormatter() if fmt == "console" else JSONFormatter()


def setup_logging(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """Route our loggers and gunicorn's through one handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    for name in (ROOT, "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
