"""pytest plugin: a skipped test fails the run unless an allow-list names it.

Why: a test skips when the machine lacks what it needs (root, dockerd, Go, ...). On CI
every such need is installed by ``packaging/install.sh test``, so a skip there means an
install step is missing, and a green run would hide it. ``.ci/run`` loads this plugin
(``-p tests.support.skip_guard --allowed-skips .ci/allowed-skips``); run by hand without
the option, pytest behaves as usual.

Allow-list format, one entry a line, ``#`` starts a comment::

    <nodeid pattern>  -- <why this skip is expected>

The pattern is matched against the test's node id with :func:`fnmatch.fnmatchcase`
(``*`` matches anything, ``::`` included); an entry without a reason is refused.
Skips during collection (a whole module) are checked by the module's node id.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Allowed:
    pattern: str
    reason: str
    line: int


def parse_allow_list(text: str, source: str = "allow-list") -> list[Allowed]:
    """Entries of an allow-list file; a line without ``-- reason`` is an error."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, sep, reason = line.partition(" -- ")
        if not sep or not pattern.strip() or not reason.strip():
            raise pytest.UsageError(
                f"{source}:{number}: write '<nodeid pattern> -- <reason>', got {raw.strip()!r}")
        entries.append(Allowed(pattern.strip(), reason.strip(), number))
    return entries


def skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--allowed-skips", metavar="FILE", default=None,
        help="fail the run when a test is skipped unless FILE allows it (see "
             "tests/support/skip_guard.py)")


class SkipGuard:
    def __init__(self, allowed: list[Allowed], source: str) -> None:
        self.allowed = allowed
        self.source = source
        self.unlisted: list[tuple[str, str]] = []
        self.listed: list[tuple[str, str, Allowed]] = []

    def _check(self, report: Any) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = skip_reason(report)
        for entry in self.allowed:
            if fnmatch.fnmatchcase(report.nodeid, entry.pattern):
                self.listed.append((report.nodeid, reason, entry))
                return
        self.unlisted.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._check(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._check(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unlisted and session.exitstatus in (pytest.ExitCode.OK,
                                                    pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.listed:
            tr.section("skips allowed by " + self.source, sep="-")
            for nodeid, reason, entry in self.listed:
                tr.line(f"{nodeid}: {reason} (allowed, line {entry.line}: {entry.reason})")
        if self.unlisted:
            tr.section(f"skips not in {self.source}: the run fails", sep="=", red=True)
            for nodeid, reason in self.unlisted:
                tr.line(f"{nodeid}: {reason}", red=True)
            tr.line("install what the test needs (packaging/install.sh test), or add a "
                    f"line '<nodeid> -- <reason>' to {self.source}")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--allowed-skips")
    if path is None:
        return
    file = Path(path)
    if not file.is_file():
        raise pytest.UsageError(f"--allowed-skips: no such file {path}")
    guard = SkipGuard(parse_allow_list(file.read_text(), path), path)
    config.pluginmanager.register(guard, "skip-guard")
