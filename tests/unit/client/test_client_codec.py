"""The C-accelerated JSON codec agrees with ``json`` and never imports it on success."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cilium_py.client import codec

DOCS = [
    {"a": [1, 2.5, None, True, False, "x\u00e9\n\"\\"], "b": {"c": -1e300, "d": 10**20}},
    [], {}, "text", 3, None, [float("inf")], {"snow": "\u2603", "ctl": "\x01"},
]


@pytest.mark.parametrize("doc", DOCS)
def test_same_text_and_values_as_json(doc: object) -> None:
    assert codec.dumps(doc) == json.dumps(doc)
    text = json.dumps(doc)
    assert repr(codec.loads(text)) == repr(json.loads(text))
    assert repr(codec.loads(f" \n{text}\t ".encode())) == repr(json.loads(text))


def test_default_hook() -> None:
    assert codec.dumps({"p": Path("/x")}, default=str) == '{"p": "/x"}'
    with pytest.raises(TypeError):
        codec.dumps({"p": Path("/x")})


BAD = ["", "  ", "{", "[1,", '{"a" 1}', "1 2", "nul", '"\x01"', "\xff"]


@pytest.mark.parametrize("text", BAD)
def test_invalid_input_is_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        codec.loads(text)
    with pytest.raises(ValueError):
        codec.loads(text.encode("latin-1"))


def test_fresh_interpreter_never_imports_json_unless_input_is_bad() -> None:
    """As in the plugin's own process: -I -S, json not imported by anyone else."""
    pkg_dir = Path(codec.__file__).parent
    script = f"""
import sys
pkg = type(sys)("client_pkg"); pkg.__path__ = [{str(pkg_dir)!r}]; sys.modules["client_pkg"] = pkg
from client_pkg import codec
assert codec.loads(codec.dumps({{"a": [1, "b"]}})) == {{"a": [1, "b"]}}
assert "json" not in sys.modules and "re" not in sys.modules, "json was imported"
for bad in {BAD!r}:
    try:
        codec.loads(bad)
    except ValueError:
        continue
    raise SystemExit("no error for " + repr(bad))
print("ok")
"""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True,
                          text=True, timeout=30)
    assert proc.stdout.strip() == "ok", proc.stderr
