"""Soak: many attach/detach cycles through each runtime path, with traffic in between.

Each path keeps one long-lived "server" endpoint; every cycle attaches a new endpoint,
every ``traffic_every`` cycles it pings the server from it, then detaches it. Readings
(resources.Snapshot) are taken along the way for the report's curves; after the last
detach, once the agent's reaper has finished, the last reading must equal the first
within resources.BOUNDS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.bench.common import name, namespaces, running_agent
from tests.nightly.resources import Snapshot, leaks, snapshot

POOL4, POOL6 = "10.237.0.0/16", "fd10:237::/112"
WARMUP = 20


@dataclass
class SoakResult:
    path: str
    cycles: int
    seconds: float
    snapshots: list[Snapshot] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "cycles": self.cycles, "seconds": round(self.seconds, 1),
                "passed": self.passed, "failures": self.failures,
                "snapshots": [s.as_dict() for s in self.snapshots]}


def _ns_run(netns: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def _ping(netns: str, address: str) -> bool:
    return _ns_run(netns, "ping", "-c", "1", "-W", "2", address).returncode == 0


def _settle(read: Callable[[], Snapshot], want: Snapshot, seconds: float = 60) -> Snapshot:
    """Readings until the exact counters are back (the reaper deletes veths later)."""
    deadline = time.monotonic() + seconds
    while True:
        got = read()
        if not leaks(want, got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def _cycles(result: SoakResult, cycles: int, sample_every: int, read: Callable[[int], Snapshot],
            one: Callable[[int], str | None]) -> None:
    """Run ``one`` per cycle (it returns a failure message or None), sampling.

    The first reading is taken after WARMUP cycles: the agent's worker threads open
    their store connections and caches fill on first use, which is not a leak.
    """
    started = time.monotonic()
    reference = read(0)
    for k in range(WARMUP):
        problem = one(cycles + 1 + k)  # numbers of their own, after the real cycles'
        if problem:
            result.failures.append(f"warm-up cycle {k}: {problem}")
            return
    first = _settle(lambda: read(0), reference)  # the warm-up's veths reaped, too
    result.snapshots.append(first)
    for i in range(1, cycles + 1):
        problem = one(i)
        if problem:
            result.failures.append(f"cycle {i}: {problem}")
            if len(result.failures) >= 5:
                break
        if i % sample_every == 0:
            result.snapshots.append(read(i))
    last = _settle(lambda: read(cycles), first)
    result.snapshots.append(last)
    result.failures += leaks(first, last)
    result.seconds = time.monotonic() - started


def soak_api(cycles: int, traffic_every: int = 10, sample_every: int = 50) -> SoakResult:
    """PUT/DELETE /v1/endpoint against an agent in a node namespace."""
    result = SoakResult("api", cycles, 0.0)
    node, server = name("cpyn-node"), name("cpyn-srv")
    with namespaces(node, server), running_agent(node, "--ipv4-pool", POOL4,
                                                 "--ipv6-pool", POOL6) as agent:
        resp = agent.api("PUT", "/v1/endpoint/soak-server", {
            "netns": f"/var/run/netns/{server}", "labels": ["container:app=server"]})
        resp.raise_for_status()
        server_ip = resp.json()["addressing"]["ipv4"].split("/")[0]

        def one(i: int) -> str | None:
            ns = name("cpyn-c")
            subprocess.run(["ip", "netns", "add", ns], check=True)
            try:
                resp = agent.api("PUT", f"/v1/endpoint/soak-{i}", {
                    "netns": f"/var/run/netns/{ns}", "labels": [f"container:app=c{i % 10}"]})
                if resp.status_code != 201:
                    return f"attach answered {resp.status_code}: {resp.text[:200]}"
                if i % traffic_every == 0 and not _ping(ns, server_ip):
                    return "ping to the server endpoint failed"
                resp = agent.api("DELETE", f"/v1/endpoint/soak-{i}")
                if resp.status_code not in (200, 204):
                    return f"detach answered {resp.status_code}: {resp.text[:200]}"
                return None
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)

        _cycles(result, cycles, sample_every, lambda c: snapshot(c, agent, node), one)
    return result


def soak_cni(cycles: int, traffic_every: int = 10, sample_every: int = 50) -> SoakResult:
    """ADD/DEL through the real libcni driver (Go, Debian's libcni) with the shipped chain."""
    from tests.e2e.cni.cni_e2e import CNILab, build_driver

    result = SoakResult("cni", cycles, 0.0)
    driver = build_driver()
    node, server = name("cpyn-node"), name("cpyn-srv")
    work = tempfile.mkdtemp(prefix="cpyn-cni-")
    try:
        with namespaces(node, server), running_agent(node, "--ipv4-pool", POOL4,
                                                     "--ipv6-pool", POOL6) as agent:
            lab = CNILab(agent, driver, work)
            conflist = lab.conflist("1.0.0", name="cpyn-soak")
            add = lab.drive("add", conflist=conflist, netns=server, cid="soak-server",
                            args="K8S_POD_NAMESPACE=soak;K8S_POD_NAME=server")
            if add.returncode != 0:
                raise RuntimeError(f"server ADD failed: {add!r}")
            server_ip = next(ip["address"] for ip in add.doc["ips"]
                             if "." in ip["address"]).split("/")[0]

            def one(i: int) -> str | None:
                ns = name("cpyn-c")
                subprocess.run(["ip", "netns", "add", ns], check=True)
                cid = f"soak-{uuid.uuid4().hex[:12]}"
                try:
                    res = lab.drive("add", conflist=conflist, netns=ns, cid=cid,
                                    args=f"K8S_POD_NAMESPACE=soak;K8S_POD_NAME=p{i % 10}")
                    if res.returncode != 0:
                        return f"ADD failed: {res!r}"
                    if i % traffic_every == 0 and not _ping(ns, server_ip):
                        return "ping to the server pod failed"
                    res = lab.drive("del", conflist=conflist, netns=ns, cid=cid)
                    return None if res.returncode == 0 else f"DEL failed: {res!r}"
                finally:
                    subprocess.run(["ip", "netns", "del", ns], check=False)

            _cycles(result, cycles, sample_every, lambda c: snapshot(c, agent, node), one)
            lab.drive("del", conflist=conflist, netns=server, cid="soak-server")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


@contextmanager
def docker_stack() -> Iterator[Any]:
    """dockerd (started only if not running), a root-namespace agent and the plugin,
    all under names of this run, removed by name afterwards."""
    from tests.e2e.docker.docker_e2e import (
        IMAGE,
        DockerEnv,
        Plugin,
        build_busybox_image,
        dockerd_running,
        run,
        start_root_agent,
    )

    tag = uuid.uuid4().hex[:6]
    prefix = f"cpyn-{tag}"
    workdir = tempfile.mkdtemp(prefix="cpyn-docker-")
    bpf_root = f"/sys/fs/bpf/{prefix}"
    router = f"cpynh{tag}"
    plugin = Plugin(name=prefix, socket=f"/run/docker/plugins/{prefix}.sock",
                    agent_socket=os.path.join(workdir, "agent.sock"),
                    state_file=os.path.join(workdir, "driver.json"),
                    log_path=os.path.join(workdir, "plugin.log"), log_level="info")
    env = None
    with dockerd_running("cpyn-dockerd.log"):
        build_busybox_image(IMAGE)
        try:
            agent = start_root_agent(workdir, bpf_root, router, "--log-level", "info")
            env = DockerEnv(prefix, agent, plugin, IMAGE, workdir)
            plugin.start()
            yield env
        finally:
            if env is not None:
                env.cleanup()
                plugin.stop()
                env.agent.stop()
            if os.path.exists(plugin.socket):
                os.unlink(plugin.socket)
            plugin.remove_chains()
            run("ip", "link", "del", router, check=False)
            shutil.rmtree(bpf_root, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)


def soak_docker(cycles: int, traffic_every: int = 10, sample_every: int = 50) -> SoakResult:
    """docker run / docker rm -f on a cilium-py network through a real dockerd."""
    result = SoakResult("docker", cycles, 0.0)
    with docker_stack() as env:
        net = env.network("soak")
        server = env.web(net, {"app": "server"})
        server_ip, _ = env.addresses(server, net)

        def read(c: int) -> Snapshot:
            assert env.plugin.proc is not None
            return snapshot(c, env.agent, "", extra_pids=(env.plugin.proc.pid,))

        def one(i: int) -> str | None:
            ctr = env.run(net, labels={"app": f"c{i % 10}"})
            try:
                if i % traffic_every == 0 and not env.ping(ctr, server_ip, count=1):
                    return "ping to the server container failed"
                return None
            finally:
                from tests.e2e.docker.docker_e2e import docker

                docker("rm", "-f", ctr, check=False)

        _cycles(result, cycles, sample_every, read, one)
    return result


PATHS: dict[str, Callable[..., SoakResult]] = {
    "api": soak_api, "cni": soak_cni, "docker": soak_docker}
