"""report.md and its plots: a summary table on top, then one section per area.

Plots are PNGs (matplotlib, no display): soak resource curves over cycles, chaos
recovery per fault, and each benchmark figure against the earlier results folders
found beside this one, so a regression shows as a line going the wrong way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

SOAK_SERIES = ("rss_mib", "fds", "veths", "addresses", "bpf_endpoints", "identities")


def previous_runs(results_dir: Path) -> list[dict[str, Any]]:
    """results.json of the folders beside this one, oldest first (names sort by date)."""
    out = []
    for sibling in sorted(results_dir.parent.iterdir()):
        if sibling == results_dir or not (sibling / "results.json").is_file():
            continue
        try:
            out.append({"run": sibling.name, **json.loads((sibling / "results.json")
                                                          .read_text())})
        except (OSError, ValueError):
            continue
    return out


def _soak_plot(soak: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), constrained_layout=True)
    for ax, series in zip(axes.flat, SOAK_SERIES, strict=True):
        xs = [s["cycle"] for s in soak["snapshots"]]
        ys = [s[series] for s in soak["snapshots"]]
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(series)
        ax.set_xlabel("cycle")
    fig.suptitle(f"soak {soak['path']}: {soak['cycles']} cycles "
                 f"({'pass' if soak['passed'] else 'FAIL'})")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _chaos_plot(chaos: dict[str, Any], path: Path) -> None:
    faults = chaos["faults"]
    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    xs = range(len(faults))
    ax.bar([x - 0.2 for x in xs], [f["outage_seconds"] for f in faults], 0.4,
           label="allowed traffic down (s)")
    ax.bar([x + 0.2 for x in xs], [f["agent_back_seconds"] for f in faults], 0.4,
           label="agent back with its state (s)")
    ax.axhline(chaos["recovery_bound_seconds"], color="red", linestyle="--",
               label="traffic recovery bound")
    ax.set_xticks(list(xs), [f["fault"] for f in faults], rotation=30, ha="right")
    ax.legend()
    ax.set_title("chaos: recovery per fault")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _bench_plot(name: str, history: list[tuple[str, dict[str, float]]], path: Path) -> None:
    keys = sorted({k for _, figures in history for k in figures})
    fig, ax = plt.subplots(figsize=(10, 4.5), constrained_layout=True)
    runs = [run for run, _ in history]
    for key in keys:
        ax.plot(runs, [figures.get(key, float("nan")) for _, figures in history],
                marker="o", label=key[:60])
    ax.set_title(f"{name}: ratios to the peer, per run")
    ax.set_ylabel("x")
    ax.tick_params(axis="x", rotation=30)
    if keys:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def write_report(results_dir: Path, results: dict[str, Any]) -> Path:
    plots = results_dir / "plots"
    plots.mkdir(exist_ok=True)
    lines = [f"# cilium-py nightly {results_dir.name}", "",
             f"Commit `{results.get('commit', '?')}`, {results.get('minutes', 0):.1f} minutes "
             f"(budget {results.get('budget_minutes')}), kernel {results.get('kernel', '?')}.",
             "", "| area | result | detail |", "|---|---|---|"]
    for area, summary in results["summary"].items():
        lines.append(f"| {area} | {'pass' if summary['passed'] else '**FAIL**'} | "
                     f"{summary['detail']} |")
    lines.append("")

    for soak in results.get("soak", []):
        png = plots / f"soak-{soak['path']}.png"
        _soak_plot(soak, png)
        lines += [f"## Soak: {soak['path']}", "",
                  f"{soak['cycles']} cycles in {soak['seconds']} s. "
                  + ("Nothing leaked." if soak["passed"] else
                     "Problems: " + "; ".join(soak["failures"])), "",
                  f"![soak {soak['path']}](plots/{png.name})", ""]

    chaos = results.get("chaos")
    if chaos:
        lines += ["## Chaos", "", "| fault | at s | traffic down s | agent back s | denied "
                  "through | state equal |", "|---|---|---|---|---|---|"]
        for f in chaos["faults"]:
            lines.append(f"| {f['fault']} | {f['at']} | {f['outage_seconds']} | "
                         f"{f['agent_back_seconds']} | {f['denied_got_through']} | "
                         f"{'yes' if f['state_equal'] else 'NO: ' + f['state_diff']} |")
        lines += [""] + [f"Failure: {x}" for x in chaos["failures"]]
        if chaos["faults"]:
            _chaos_plot(chaos, plots / "chaos.png")
            lines += ["", "![chaos](plots/chaos.png)"]
        lines.append("")

    if results.get("fuzz"):
        lines += ["## Fuzz", "", "| target | examples | seconds | result |", "|---|---|---|---|"]
        for f in results["fuzz"]:
            lines.append(f"| {f['target']} | {f['examples']} | {f['seconds']} | "
                         f"{'pass' if f['passed'] else '; '.join(f['failures'])} |")
        lines.append("")

    if results.get("bench"):
        earlier = previous_runs(results_dir)
        lines += ["## Benchmarks", "", "Each figure is a ratio to its peer measured in the "
                  "same run; the plots show it against earlier runs.", ""]
        for bench in results["bench"]:
            history = [(run["run"], next((b["figures"] for b in run.get("bench", [])
                                          if b["name"] == bench["name"]), {}))
                       for run in earlier]
            history.append((results_dir.name, bench["figures"]))
            png = plots / f"{bench['name']}.png"
            _bench_plot(bench["name"], history, png)
            state = "ok" if bench["passed"] else f"**exit {bench['returncode']}**"
            lines += [f"### {bench['name']} ({state}, {bench['seconds']} s, output "
                      f"[{bench['output']}](bench/{bench['output']}))", ""]
            lines += [f"- {k}: {v}x" for k, v in bench["figures"].items()] or ["- no ratios"]
            lines += ["", f"![{bench['name']}](plots/{png.name})", ""]

    path = results_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
