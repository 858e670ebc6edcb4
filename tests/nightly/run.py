"""``python -m tests.nightly.run``: the whole nightly within a time budget.

Areas run in order (soak, chaos, fuzz, bench); each is given what is left of the budget
and an area that cannot start in time is reported as not run (a failure). Results go to
a dated folder under ``--results-root``: results.json, report.md, plots/, bench/ (each
benchmark's output) and reproducers/ (fuzz failures). The exit code is 0 only when every
area passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.nightly import benches, chaos, fuzz, report, soak
from tests.nightly.report import previous_runs

AREAS = ("soak", "chaos", "fuzz", "bench")
MOVED = 0.25  # a benchmark ratio this far from earlier runs' median is flagged


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=benches.REPO)
    return proc.stdout.strip() or "?"


def moved_figures(results_dir: Path, bench: list[dict[str, Any]]) -> list[str]:
    """Figures that moved more than MOVED from the median of the earlier runs (needs two)."""
    earlier = previous_runs(results_dir)
    out = []
    for b in bench:
        for key, value in b["figures"].items():
            past = [f for run in earlier for rb in run.get("bench", []) if rb["name"] == b["name"]
                    for k, f in rb["figures"].items() if k == key]
            if len(past) >= 2:
                median = statistics.median(past)
                if median and abs(value - median) / median > MOVED:
                    out.append(f"{b['name']}: {key} {value}x (earlier median {median:.2f}x)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-root", default=os.environ.get(
        "CILIUM_PY_NIGHTLY_RESULTS", "/var/tmp/cilium-py-nightly"))
    p.add_argument("--budget-minutes", type=float, default=60)
    p.add_argument("--areas", default=",".join(AREAS))
    p.add_argument("--cycles", type=int, default=1000, help="soak cycles per runtime path")
    p.add_argument("--soak-paths", default="api,cni,docker")
    p.add_argument("--chaos-rounds", type=int, default=8)
    p.add_argument("--fuzz-seconds", type=float, default=60, help="per fuzz target")
    p.add_argument("--benches", default="", help="comma-separated subset (default all)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the nightly needs root (namespaces, BPF, dockerd)", file=sys.stderr)
        return 2

    started = time.monotonic()
    budget = args.budget_minutes * 60
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out = Path(args.results_root) / stamp
    out.mkdir(parents=True)
    results: dict[str, Any] = {"commit": _commit(), "kernel": platform.release(),
                               "budget_minutes": args.budget_minutes, "summary": {}}
    wanted = [a for a in args.areas.split(",") if a]

    def left() -> float:
        return budget - (time.monotonic() - started)

    def area(name: str, fn: Any) -> None:
        if name not in wanted:
            return
        if left() <= 60:
            results["summary"][name] = {"passed": False, "detail": "not run: budget spent"}
            return
        print(f"== {name} ({left() / 60:.1f} min left)", flush=True)
        try:
            results["summary"][name] = fn()
        except Exception as exc:  # noqa: BLE001 - an area's crash is its failure, not ours
            (out / f"{name}-crash.txt").write_text(traceback.format_exc())
            results["summary"][name] = {"passed": False,
                                        "detail": f"crashed: {type(exc).__name__}: {exc}"}
        print(f"   {results['summary'][name]}", flush=True)

    def do_soak() -> dict[str, Any]:
        results["soak"] = []
        for path in args.soak_paths.split(","):
            r = soak.PATHS[path](args.cycles).as_dict()
            results["soak"].append(r)
        bad = [f"{s['path']}: {'; '.join(s['failures'])}" for s in results["soak"]
               if not s["passed"]]
        return {"passed": not bad, "detail": "; ".join(bad) or ", ".join(
            f"{s['path']} {s['cycles']} cycles clean" for s in results["soak"])}

    def do_chaos() -> dict[str, Any]:
        r = chaos.run_chaos(args.chaos_rounds).as_dict()
        results["chaos"] = r
        worst = max((f["outage_seconds"] for f in r["faults"]), default=0)
        bad = [f["fault"] for f in r["faults"] if not f["passed"]] + r["failures"]
        return {"passed": r["passed"], "detail": f"{len(r['faults'])} faults, longest "
                f"allowed-traffic outage {worst} s" + (f"; failed: {bad}" if bad else "")}

    def do_fuzz() -> dict[str, Any]:
        results["fuzz"] = [fuzz.TARGETS[t](args.fuzz_seconds, out / "reproducers").as_dict()
                           for t in fuzz.TARGETS]
        bad = [f["target"] for f in results["fuzz"] if not f["passed"]]
        total = sum(f["examples"] for f in results["fuzz"])
        return {"passed": not bad, "detail": f"{total} examples" +
                (f"; failed: {', '.join(bad)}" if bad else "")}

    def do_bench() -> dict[str, Any]:
        names = [n for n in args.benches.split(",") if n] or benches.discover()
        results["bench"] = []
        for i, n in enumerate(names):
            share = max(left() - 30, 60) / (len(names) - i)
            results["bench"].append(benches.run_bench(n, out / "bench", share * 1.5).as_dict())
        bad = [b["name"] for b in results["bench"] if not b["passed"]]
        moved = moved_figures(out, results["bench"])
        results["bench-moved"] = moved
        detail = f"{len(names) - len(bad)}/{len(names)} ran"
        if bad:
            detail += f"; failed: {', '.join(bad)}"
        if moved:
            detail += f"; {len(moved)} figures moved > {MOVED:.0%}: " + "; ".join(moved[:3])
        return {"passed": not bad and not moved, "detail": detail}

    for name, fn in (("soak", do_soak), ("chaos", do_chaos), ("fuzz", do_fuzz),
                     ("bench", do_bench)):
        area(name, fn)
    results["minutes"] = (time.monotonic() - started) / 60
    (out / "results.json").write_text(json.dumps(results, indent=1))
    path = report.write_report(out, results)
    print(f"report: {path}")
    return 0 if all(s["passed"] for s in results["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
