"""CNI: ADD / CHECK / DEL latency through libcni, cilium-py vs the reference plugins.

Every chain is driven the way container runtimes drive it, by the libcni driver of the
e2e tests (Debian's libcni), inside one test-made node namespace that also runs the
agent, so the host ends, the reference bridge and any iptables rules stay in there.
The chains take turns round by round (A B C, B C A, ...), after one unmeasured warm-up
round (the bridge plugin creates its bridge on the first ADD):

- reference: ``bridge`` + ``host-local`` (containernetworking-plugins), the issue's peer,
  without ``ipMasq`` (the stricter peer: no iptables work), and the same with ``ipMasq``,
  which like cilium-py masquerades traffic leaving the pool;
- cilium-py: ``cilium-py-cni`` alone;
- cilium-py + portmap: the shipped conflist's chain.

Ratios are taken round by round against the reference and reported as their median.
Then the plugin binary's start-up: a VERSION exec of the installed launcher (and of the
setuptools console script, for comparison) against a bare ``python3 -c 'import json,
socket'`` and the reference Go binary.

    python -m tests.bench.bench_cni [--rounds 100] [--startup-runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cilium_py.cni import install
from tests.bench.common import name, namespaces, now, percentile, require_root, running_agent
from tests.e2e.cni.cni_e2e import REFERENCE_PLUGINS, build_driver

GOALS = {"add": 2.5, "del": 1.0}


def write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


def conflists(work: Path, agent_socket: str) -> dict[str, str]:
    cilium = install.cilium_plugin_conf(agent_socket, str(work / "cni.log"))
    cilium["log-level"] = "warning"
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    bridge = {"type": "bridge", "bridge": "cpybr0", "isGateway": True, "ipMasq": False,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.234.0.0/16"}]],
                       "dataDir": str(work / "host-local")}}
    # The same with ipMasq, as cilium-py also masquerades what leaves the pool (the
    # bridge plugin then adds and removes an iptables rule per container).
    masq = dict(bridge, bridge="cpybr1", ipMasq=True,
                ipam=dict(bridge["ipam"], ranges=[[{"subnet": "10.236.0.0/16"}]]))
    docs = {
        "reference bridge + host-local": [bridge],
        "reference, ipMasq": [masq],
        "cilium-py": [cilium],
        "cilium-py + portmap": [cilium, portmap],
    }
    return {label: write(work / f"chain{i}.conflist",
                         {"cniVersion": "1.0.0", "name": f"cpyb-chain{i}", "plugins": plugins})
            for i, (label, plugins) in enumerate(docs.items())}


def run_bench(driver: str, node: str, lists: dict[str, str], nses: list[str], work: Path,
              cni_path: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    cmd = ["nsenter", f"--net=/var/run/netns/{node}", "--", driver, "bench",
           "-rounds", str(rounds), "-cni-path", cni_path, "-cache-dir", str(work / "cache"),
           "-id", "cpyb"]
    for path, ns in zip(lists.values(), nses, strict=True):
        cmd += ["-conflist", path, "-netns", f"/var/run/netns/{ns}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"libcni driver failed: {proc.stdout}{proc.stderr}")
    by_name = json.loads(proc.stdout)
    return {label: by_name[f"cpyb-chain{i}"] for i, label in enumerate(lists)}


def startup(cmds: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """VERSION execs, alternated so that drift hits every command alike."""
    env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for _ in range(runs):
        for label, cmd in cmds.items():
            t0 = now()
            subprocess.run(cmd, input=b'{"cniVersion": "1.0.0"}', env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[label].append((now() - t0) * 1000)
    return times


def p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 50):6.1f} / {percentile(values, 99):6.1f}"


def ratios(t: dict[str, list[float]], ref: dict[str, list[float]], verb: str) -> list[float]:
    """Per-round ratios (the chains ran side by side, round by round)."""
    return [a / b for a, b in zip(t[verb], ref[verb], strict=True) if b > 0]


def print_chains(results: dict[str, dict[str, list[float]]], rounds: int) -> None:
    print(f"\nCNI through libcni (spec 1.0.0), {rounds} rounds after a warm-up, p50 / p99 ms")
    print(f"{'plugin chain':34} {'ADD':>15} {'CHECK':>15} {'DEL':>15}")
    for label, t in results.items():
        print(f"{label:34} {p50_p99(t['add']):>15} {p50_p99(t['check']):>15} "
              f"{p50_p99(t['del']):>15}")
    for ref_label in ("reference bridge + host-local", "reference, ipMasq"):
        ref = results[ref_label]
        print(f"\nratio to {ref_label}, median of per-round ratios [min-max]")
        for label, t in results.items():
            if label.startswith("reference"):
                continue
            cells = []
            for verb in ("add", "check", "del"):
                r = ratios(t, ref, verb)
                goal = f" (goal <= {GOALS[verb]}x)" if verb in GOALS else ""
                cells.append(f"{verb.upper()} {statistics.median(r):.2f}x "
                             f"[{min(r):.2f}-{max(r):.2f}]{goal}")
            print(f"  {label:32} " + "; ".join(cells), flush=True)


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--startup-runs", type=int, default=50)
    args = parser.parse_args()
    driver = build_driver()
    work = Path(tempfile.mkdtemp(prefix="cpyb-cni-"))
    node = name("cpyb-n")
    nses = [name("cpyb-c") for _ in range(4)]
    try:
        plugins_dir = work / "bin"
        launcher, _ = install.install_plugin(str(plugins_dir))
        with namespaces(node, *nses), running_agent(
                node, "--ipv4-pool", "10.235.0.0/16", "--ipv6-pool", "fd10:235::/108") as agent:
            lists = conflists(work, agent.socket)
            cni_path = f"{plugins_dir}:{REFERENCE_PLUGINS}"
            results = run_bench(driver, node, lists, nses, work, cni_path, args.rounds)
        print_chains(results, args.rounds)
        # Debian's interpreter, as the launcher uses it (the venv's would add site work).
        bare = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        times = startup({
            "python3 -c 'import json, socket'": [bare, "-c", "import json, socket"],
            "cilium-py-cni (installed launcher)": [launcher],
            "cilium-py-cni (console script)": [str(Path(sys.executable).parent
                                                   / "cilium-py-cni")],
            "reference bridge binary": [f"{REFERENCE_PLUGINS}/bridge"],
        }, args.startup_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nstart-up: one VERSION exec, {args.startup_runs} runs, median [p99] ms")
    for label, t in times.items():
        print(f"  {label:38} {statistics.median(t):6.1f} [{percentile(t, 99):.1f}]")


if __name__ == "__main__":
    main()
