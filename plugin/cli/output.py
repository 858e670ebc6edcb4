"""Printing results: JSON for scripts (``-o json``), aligned tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def print_json(doc: Any, out: TextIO | None = None) -> None:
    # sys.stdout is looked up per call, not bound at import: a redirected stdout
    # (contextlib.redirect_stdout, a test's capture) must get the output.
    out = out or sys.stdout
    json.dump(doc, out, indent=2, sort_keys=False)
    out.write("\n")


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None
) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
