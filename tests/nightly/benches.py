"""Every benchmark under tests/bench/, each as its own process with a time limit.

The benchmarks print their figures beside their peers; the nightly keeps the output and
picks out every ratio (``1.02x``) with the words around it as the figure's name, so a new
benchmark is charted without a parser of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "tests" / "bench"
# Shorter runs than the defaults so that all of them fit the nightly budget.
NIGHTLY_ARGS: dict[str, list[str]] = {
    "bench_attach": ["--count", "200", "--scale", "500"],
    "bench_cluster": ["--rounds", "2", "--changes", "20"],
    "bench_cni": ["--rounds", "50", "--startup-runs", "20"],
    "bench_datapath": ["--rounds", "2"],
    "bench_docker": ["--count", "20"],
    "bench_envoy_floor": ["--rounds", "2", "--duration", "4"],
    "bench_kafka": ["--rounds", "2", "--messages", "300000", "--pings", "2000"],
    "bench_l7": ["--rounds", "2", "--duration", "4"],
}
RATIO = re.compile(r"(\d+(?:\.\d+)?)x\b")
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


@dataclass
class BenchResult:
    name: str
    returncode: int
    seconds: float
    figures: dict[str, float] = field(default_factory=dict)
    output_file: str = ""

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "returncode": self.returncode, "passed": self.passed,
                "seconds": round(self.seconds, 1), "figures": self.figures,
                "output": self.output_file}


def ratios(text: str) -> dict[str, float]:
    """Each ``N.NNx`` in the output, named by its line with the numbers blanked."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        found = RATIO.findall(line)
        if not found:
            continue
        label = " ".join(NUMBER.sub("#", line).split())[:90]
        for i, value in enumerate(found):
            key = label if len(found) == 1 else f"{label} [{i + 1}]"
            out[key] = float(value)
    return out


def discover() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def run_bench(name: str, out_dir: Path, timeout: float) -> BenchResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{name}.txt"
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", f"tests.bench.{name}",
                               *NIGHTLY_ARGS.get(name, [])], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        rc, text = proc.returncode, proc.stdout + ("\n--- stderr\n" + proc.stderr
                                                   if proc.stderr else "")
    except subprocess.TimeoutExpired as exc:
        rc = -1
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        text += f"\n--- timed out after {timeout:.0f} s"
    log.write_text(text)
    return BenchResult(name, rc, time.monotonic() - started, ratios(text), log.name)
