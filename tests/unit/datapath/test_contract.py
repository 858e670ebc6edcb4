"""The datapath's contract (datapath/contract.py) is what the agent holds and calls.

Checked twice: at run time, that the bcc implementation has every member the contract
lists with the same parameters; and with mypy, that the agent's modules type-check
against the contract (a call outside it, or with wrong argument types, fails here).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from cilium_py.agent.agent import Agent
from cilium_py.datapath import Datapath, DatapathContract

ROOT = Path(__file__).resolve().parents[3]


def _members(proto: type) -> dict[str, object]:
    return {name: value for name, value in vars(proto).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _params(func: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def test_implementation_has_every_contract_member_with_its_parameters() -> None:
    members = _members(DatapathContract)
    assert {"attach_endpoint", "detach_endpoint", "set_policy", "start"} <= set(members)
    for name, declared in members.items():
        implemented = inspect.getattr_static(Datapath, name, None)
        assert implemented is not None, f"Datapath lacks {name}"
        if isinstance(declared, property):
            assert isinstance(implemented, property), f"Datapath.{name} is not a property"
            continue
        assert _params(implemented) == _params(declared), (
            f"Datapath.{name}{inspect.signature(implemented)} differs from the contract")


def test_agent_holds_the_datapath_by_its_contract() -> None:
    hints = inspect.get_annotations(Agent.__init__)
    assert hints["datapath"] == "DatapathContract | None"


def test_agent_modules_type_check_against_the_contract() -> None:
    files = ["plugin/datapath/contract.py", "plugin/agent/agent.py", "plugin/agent/daemon.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
         "--no-incremental", "--cache-dir=/dev/null", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
