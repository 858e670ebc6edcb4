"""CI fails on a skipped test unless .ci/allowed-skips lists it (tests/support/skip_guard.py).

Each case runs a real pytest in a scratch directory with the plugin loaded as .ci/run
loads it, and checks the exit status and what the run prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.skip_guard import parse_allow_list

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import pytest

def test_passes():
    pass

def test_needs_frobnicator():
    pytest.skip("no frobnicator on this machine")
'''


def run(tmp_path: Path, allow: str | None, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(TESTS)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "tests.support.skip_guard", *extra]
    if allow is not None:
        (tmp_path / "allowed-skips").write_text(allow)
        args += ["--allowed-skips", "allowed-skips"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(args + ["test_sample.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_unlisted_skip_fails_the_run_and_names_the_test(tmp_path: Path) -> None:
    proc = run(tmp_path, "# nothing allowed\n")
    assert proc.returncode == 1, proc.stdout
    assert "skips not in allowed-skips" in proc.stdout
    assert "test_sample.py::test_needs_frobnicator: no frobnicator on this machine" in proc.stdout


def test_listed_skip_passes_and_is_reported_with_its_reason(tmp_path: Path) -> None:
    proc = run(tmp_path, "test_sample.py::test_needs_frobnicator -- CI has no frobnicator\n")
    assert proc.returncode == 0, proc.stdout
    assert "CI has no frobnicator" in proc.stdout


def test_pattern_matches_node_ids(tmp_path: Path) -> None:
    proc = run(tmp_path, "test_sample.py::*frob* -- CI has no frobnicator  # a comment\n")
    assert proc.returncode == 0, proc.stdout


def test_failures_keep_their_own_exit_status(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert False\n")
    proc = run(tmp_path, "", "test_fails.py")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout


def test_without_the_option_pytest_behaves_as_usual(tmp_path: Path) -> None:
    proc = run(tmp_path, None)
    assert proc.returncode == 0, proc.stdout


def test_entry_without_reason_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match="line|:1:"):
        parse_allow_list("tests/x.py::test_y\n", "allowed-skips")


def test_ci_allow_list_parses_and_every_entry_has_a_reason() -> None:
    entries = parse_allow_list((ROOT / ".ci/allowed-skips").read_text())
    assert all(e.reason for e in entries)
    assert len(entries) <= 10, "the allow-list is meant to stay short"


def test_ci_run_loads_the_guard() -> None:
    text = (ROOT / ".ci/run").read_text()
    assert "-p tests.support.skip_guard" in text
    assert "--allowed-skips .ci/allowed-skips" in text
