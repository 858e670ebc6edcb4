"""The attach undo stack: newest first, every step even when one fails, none after commit."""

from __future__ import annotations

import pytest

from cilium_py.endpoint.undo import UndoStack


def test_failure_unwinds_newest_first() -> None:
    done: list[str] = []
    with pytest.raises(RuntimeError, match="veth"):
        with UndoStack("attach") as undo:
            for name in ("address", "record", "identity"):
                undo.push(name, lambda n=name: done.append(n))
            assert undo.names == ["address", "record", "identity"]
            raise RuntimeError("veth creation failed")
    assert done == ["identity", "record", "address"]


def test_a_failing_undo_does_not_stop_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    def broken() -> None:
        raise OSError("device busy")

    undo = UndoStack("attach", {"id": "ep1"})
    undo.push("first", lambda: done.append("first"))
    undo.push("broken", broken)
    undo.push("last", lambda: done.append("last"))
    assert undo.unwind() == ["broken"]
    assert done == ["last", "first"]
    assert "undo step failed" in caplog.text


def test_commit_keeps_the_work() -> None:
    done: list[str] = []
    with UndoStack("attach") as undo:
        undo.push("address", lambda: done.append("address"))
        undo.commit()
    assert done == [] and undo.names == []
