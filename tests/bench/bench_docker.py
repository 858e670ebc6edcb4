"""Docker: ``docker run`` to network ready on cilium-py vs Docker's default bridge.

Three set-ups are measured in the same run, in rotated order (A B C, B C A, C A B, ...)
so that drift hits them alike: cilium-py, Docker's default bridge (the issue's
reference), and a user-defined bridge network. The last one matters for reading the
ratio: every user-defined network, whatever its driver, gets dockerd's embedded DNS
(set up inside each container with iptables), which the default bridge does not; so
cilium-py vs user-defined bridge is the driver's own cost. For each container:

- *run*: ``docker run -d`` until it returns (the container is started);
- *ready*: ``docker run -d`` until the host completes a TCP connection to the
  container's httpd (address read with ``docker inspect``, the same cost both ways);
- *identity* (cilium-py only): from the container's ``State.StartedAt`` until the agent
  has set the container's labels on its endpoint (its label watcher logs "endpoint
  labels set" once the labels' identity replaced the reserved *init* one and the
  datapath has it), i.e. until policy for its real labels is in force. It is read from
  the agent's log after the run rather than by polling the agent during it: polling
  (and the ``docker inspect`` it needed) ran only beside the cilium-py containers and
  competed with their readiness probe for the CPUs.

Containers stay up until the end (50 of each by default), then are removed and timed.
The agent runs in the root namespace (dockerd's) with its own pools and names, the
plugin under a unique driver name; both log at their default level (info), and labels
come from the agent's own watcher, as in the installed set-up.

    python -m tests.bench.bench_docker [--count 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from datetime import datetime

from tests.bench.common import percentile, require_root, sh
from tests.e2e.docker.docker_e2e import (
    Plugin,
    build_busybox_image,
    dockerd_running,
    start_root_agent,
)

LABELS_SET = "endpoint labels set"
HTTPD = ("httpd", "-f", "-p", "80", "-h", "/www")


def started_at(text: str) -> float:
    """Docker's RFC 3339 timestamp with nanoseconds, as a Unix time."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + float("0." + (frac or "0"))


def wait_tcp(address: str, port: int, timeout: float = 30.0) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.connect((address, port))
                return
            except OSError:
                time.sleep(0.002)
    raise RuntimeError(f"{address}:{port} never answered")


def labels_set_times(log_path: str) -> dict[str, float]:
    """When the agent first set labels on each endpoint (Unix time), from its JSON log."""
    out: dict[str, float] = {}
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict) or doc.get("message") != LABELS_SET:
                continue
            ep_id = (doc.get("fields") or {}).get("endpoint")
            if ep_id and ep_id not in out:
                out[ep_id] = started_at(doc["time"])
    return out


def run_one(image: str, network: str, name: str,
            labels: dict[str, str]) -> tuple[dict[str, float], dict]:
    """Times one container; returns the times and its ``docker inspect`` document."""
    label_args = [a for k, v in labels.items() for a in ("-l", f"{k}={v}")]
    t0 = time.perf_counter()
    sh("docker", "run", "-d", "--name", name, "--network", network, *label_args, image, *HTTPD)
    t_run = time.perf_counter()
    info = json.loads(sh("docker", "inspect", name))[0]
    address = info["NetworkSettings"]["Networks"][network]["IPAddress"]
    wait_tcp(address, 80)
    t_ready = time.perf_counter()
    return {"run": (t_run - t0) * 1000, "ready": (t_ready - t0) * 1000}, info


def summary(label: str, values: list[float]) -> str:
    return (f"{label:<32} p50 {percentile(values, 50):8.1f} ms   "
            f"p99 {percentile(values, 99):8.1f} ms   (n={len(values)})")


def main() -> None:
    require_root()
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    prefix = f"cpyb-{tag}"
    work = tempfile.mkdtemp(prefix="cpyb-docker-")
    bpf_root = f"/sys/fs/bpf/{prefix}"
    router = f"cpybh{tag}"
    image = f"{prefix}-busybox"
    kinds = ("cilium-py", "bridge", "user-bridge")
    names: dict[str, list[str]] = {kind: [] for kind in kinds}
    with dockerd_running("cpyb-dockerd.log"):
        build_busybox_image(image)
        agent = None
        plugin = Plugin(prefix, f"/run/docker/plugins/{prefix}.sock",
                        os.path.join(work, "agent.sock"), os.path.join(work, "driver.json"),
                        os.path.join(work, "plugin.log"), log_level="info",
                        watch_labels=False)
        network, user_bridge = f"{prefix}-net", f"{prefix}-br"
        nets = {"cilium-py": network, "bridge": "bridge", "user-bridge": user_bridge}
        results: dict[str, dict[str, list[float]]] = {
            kind: {"run": [], "ready": []} for kind in kinds}
        results["cilium-py"]["identity"] = []
        started: dict[str, float] = {}  # cilium-py endpoint id -> container StartedAt
        removal: dict[str, list[float]] = {kind: [] for kind in kinds}
        try:
            agent = start_root_agent(work, bpf_root, router, "--log-level", "info",
                                     pools=("10.202.0.0/16", "fd10:202::/112"))
            plugin.start()
            sh("docker", "network", "create", "-d", prefix, "--ipam-driver", prefix, network)
            sh("docker", "network", "create", "--subnet", "10.204.0.0/16", user_bridge)
            # One unmeasured warm-up each (image layers, first-use caches).
            for kind in kinds:
                warm = f"{prefix}-warm-{kind}"
                run_one(image, nets[kind], warm, {"app": "warm"})
                sh("docker", "rm", "-f", warm)
            for i in range(args.count):
                order = kinds[i % 3:] + kinds[:i % 3]
                for kind in order:
                    name = f"{prefix}-{kind}-{i}"
                    names[kind].append(name)
                    got, info = run_one(image, nets[kind], name, {"app": f"bench-{i % 5}"})
                    for key, value in got.items():
                        results[kind][key].append(value)
                    if kind == "cilium-py":
                        ep_id = info["NetworkSettings"]["Networks"][network]["EndpointID"]
                        started[ep_id] = started_at(info["State"]["StartedAt"])
            set_at = labels_set_times(agent.log_path)
            for ep_id, when in started.items():
                if ep_id not in set_at:
                    raise RuntimeError(f"endpoint {ep_id[:12]} never left the init identity")
                results["cilium-py"]["identity"].append((set_at[ep_id] - when) * 1000)
            for i in range(args.count):
                for kind in kinds:
                    t0 = time.perf_counter()
                    sh("docker", "rm", "-f", names[kind][i])
                    removal[kind].append((time.perf_counter() - t0) * 1000)
        finally:
            leftovers = sh("docker", "ps", "-aq", "--filter", f"name={prefix}-",
                           check=False).split()
            if leftovers:
                sh("docker", "rm", "-f", *leftovers, check=False)
            sh("docker", "network", "rm", network, user_bridge, check=False)
            plugin.stop()
            if agent is not None:
                agent.stop()
            if os.path.exists(plugin.socket):
                os.unlink(plugin.socket)
            sh("ip", "link", "del", router, check=False)
            sh("docker", "rmi", "-f", image, check=False)
            plugin.remove_chains()
            shutil.rmtree(bpf_root, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

    print(f"docker run -> network ready, {args.count} containers each, rotated order")
    for kind in kinds:
        print(summary(f"{kind}: docker run -d returned", results[kind]["run"]))
        print(summary(f"{kind}: reachable from host", results[kind]["ready"]))
        print(summary(f"{kind}: docker rm -f", removal[kind]))
    for peer in ("bridge", "user-bridge"):
        for key in ("run", "ready"):
            ours, theirs = results["cilium-py"][key], results[peer][key]
            print(f"ratio cilium-py/{peer} ({key}): "
                  f"p50 {percentile(ours, 50) / percentile(theirs, 50):.2f}x   "
                  f"p99 {percentile(ours, 99) / percentile(theirs, 99):.2f}x   (goal <= 1.2x)")
    print(summary("start -> identity in force", results["cilium-py"]["identity"])
          + "   (goal p99 < 500 ms)")


if __name__ == "__main__":
    main()
