"""Fuzz for a fixed budget: the policy language, the CNI plugin (stdin and environment),
libnetwork bodies against a running Docker plugin, and the REST API (the suite's
schemathesis test under the nightly hypothesis profile).

A failure is what a user must never see: an exception other than the parser's own
error, a CNI "internal error" (a crash turned into code 100), a libnetwork 5xx that says
"internal error", a hang, or an API 5xx. Each failure's falsifying example is saved in
``reproducers/`` of the results folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=20)

POLICY_KEYS = ("endpointSelector", "ingress", "egress", "labels", "fromEndpoints",
               "toEndpoints", "fromCIDR", "toCIDR", "fromCIDRSet", "toPorts", "ports",
               "port", "protocol", "rules", "http", "kafka", "method", "path", "matchLabels",
               "matchExpressions", "key", "operator", "values", "fromEntities", "toEntities",
               "apiKey", "topic", "role", "headers", "description", "except", "cidr")


def _policy_like() -> st.SearchStrategy[Any]:
    """Documents shaped like policies (known keys, wrong values) and arbitrary JSON."""
    leaf = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=30) \
        | st.sampled_from(["TCP", "UDP", "ANY", "80", "0", "65536", "10.0.0.0/8", "::/0",
                           "GET", "/a.*", "k8s:app", "In", "Exists", "host", "world"])
    tree = st.recursive(leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.sampled_from(POLICY_KEYS) | st.text(max_size=8), kids, max_size=5), max_leaves=30)
    return st.lists(tree, max_size=3) | JSON


@dataclass
class FuzzResult:
    target: str
    examples: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "examples": self.examples,
                "seconds": round(self.seconds, 1), "passed": self.passed,
                "failures": self.failures}


def _budgeted(result: FuzzResult, seconds: float, out_dir: Path,
              make: Callable[[Callable[[], None]], Callable[[], None]]) -> None:
    """Run hypothesis batches of fresh random examples until the budget is spent."""
    started = time.monotonic()
    batch = 0
    while time.monotonic() - started < seconds and not result.failures:
        batch += 1

        def count() -> None:
            result.examples += 1

        test = make(count)
        try:
            settings(max_examples=200, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(test)()
        except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the example's error
            notes = "\n".join(getattr(exc, "__notes__", []))
            text = f"{notes}\n{''.join(traceback.format_exception(exc))}"
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{result.target}-{batch}.txt"
            path.write_text(text)
            result.failures.append(f"{type(exc).__name__}: {str(exc)[:200]} "
                                   f"(reproducer: {path.name})")
    result.seconds = time.monotonic() - started


def fuzz_policy(seconds: float, out_dir: Path) -> FuzzResult:
    from cilium_py.policy.errors import PolicyError
    from cilium_py.policy.schema import parse_policy

    result = FuzzResult("policy")

    def make(count: Callable[[], None]) -> Callable[[], None]:
        @given(_policy_like())
        def test(doc: Any) -> None:
            count()
            try:
                parse_policy(doc)
            except PolicyError:
                pass
        return test

    _budgeted(result, seconds, out_dir, make)
    return result


def fuzz_cni(seconds: float, out_dir: Path) -> FuzzResult:
    """cni.main.run in process, as an exec would call it, against no agent at all."""
    from cilium_py.cni.log import Log
    from cilium_py.cni.main import run

    result = FuzzResult("cni")
    work = Path(tempfile.mkdtemp(prefix="cpyn-fuzz-cni-"))
    sock = str(work / "no-agent.sock")
    conf_keys = ("cniVersion", "name", "type", "agent-socket", "log-level", "args",
                 "runtimeConfig", "prevResult", "ipam", "dns", "capabilities")
    env_values = st.sampled_from(["", "dummy", "/proc/self/ns/net", "/nonexistent", "eth0",
                                  "a" * 300, "x;y=z", "IgnoreUnknown=1;K8S_POD_NAME=p",
                                  "/opt/cni/bin"]) | st.text(max_size=16)
    environ = st.fixed_dictionaries({
        "CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS",
                                        "", "add"]) | st.text(max_size=6),
    }, optional={k: env_values for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                                         "CNI_ARGS", "CNI_PATH")})
    conf = st.fixed_dictionaries({}, optional={k: JSON for k in conf_keys}).map(
        lambda d: {**d, "agent-socket": sock} if d.get("agent-socket") else d)
    stdin = st.one_of(conf.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64),
                      JSON.map(lambda d: json.dumps(d).encode()))

    def make(count: Callable[[], None]) -> Callable[[], None]:
        @given(environ, stdin)
        def test(env: dict[str, str], data: bytes) -> None:
            count()
            out = io.StringIO()
            log = Log(str(work / "cni.log"))
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # the plugin echoes there
                    rc = run(env, data, out, log)
            finally:
                log.close()  # one exec's log; the nightly runs thousands in one process
            text = out.getvalue()
            assert rc in (0, 1), rc
            if text:
                doc = json.loads(text)
                assert "internal error" not in str(doc.get("msg", "")), doc
        return test

    try:
        os.environ["CILIUM_PY_CNI_LOG"] = str(work / "cni.log")
        _budgeted(result, seconds, out_dir, make)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


LIBNETWORK_METHODS = (
    "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint", "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join", "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete", "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork", "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress", "NoSuch.Method")
LIBNETWORK_KEYS = ("NetworkID", "EndpointID", "SandboxKey", "Options", "Interface",
                   "IPv4Data", "IPv6Data", "Address", "AddressIPv6", "MacAddress", "Pool",
                   "SubPool", "PoolID", "V6", "AddressSpace", "com.docker.network.generic",
                   "ExposedPorts", "PortMap", "Gateway", "AuxAddresses")


def fuzz_libnetwork(seconds: float, out_dir: Path) -> FuzzResult:
    """Bodies POSTed to a real plugin process whose agent and chains live in a node
    namespace of this run, so whatever the bodies make stays in there."""
    import requests_unixsocket

    from tests.bench.common import name, namespaces, running_agent

    result = FuzzResult("libnetwork")
    node = name("cpyn-node")
    work = tempfile.mkdtemp(prefix="cpyn-fuzz-ln-")
    plugin_sock = os.path.join(work, "plugin.sock")
    bodies = st.one_of(
        st.fixed_dictionaries({}, optional={k: JSON for k in LIBNETWORK_KEYS}).map(
            lambda d: json.dumps(d).encode()),
        JSON.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64))
    with namespaces(node), running_agent(node, "--ipv4-pool", "10.240.0.0/16",
                                         "--ipv6-pool", "fd10:240::/112") as agent:
        log = open(os.path.join(work, "plugin.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{node}", "--", sys.executable, "-m",
             "cilium_py.docker.main", "--agent-socket", agent.socket, "--plugin-socket",
             plugin_sock, "--state-file", os.path.join(work, "driver.json"),
             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        session = requests_unixsocket.Session()
        base = "http+unix://" + plugin_sock.replace("/", "%2F") + "/"
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(plugin_sock) and time.monotonic() < deadline:
                time.sleep(0.1)

            def make(count: Callable[[], None]) -> Callable[[], None]:
                @given(st.sampled_from(LIBNETWORK_METHODS), bodies)
                def test(method: str, body: bytes) -> None:
                    count()
                    resp = session.post(base + method, data=body, timeout=10)
                    doc = resp.json()
                    assert isinstance(doc, dict), doc
                    assert not (resp.status_code >= 500
                                and "internal error" in str(doc.get("Err", ""))), doc
                    assert proc.poll() is None, "the plugin exited"
                return test

            _budgeted(result, seconds, out_dir, make)
        finally:
            proc.terminate()
            proc.wait(20)
            shutil.rmtree(work, ignore_errors=True)
    return result


def fuzz_api(seconds: float, out_dir: Path) -> FuzzResult:
    """The suite's schemathesis/API fuzz tests, under the nightly hypothesis profile."""
    result = FuzzResult("api")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/api",
         "-k", "schemathesis or fuzz or openapi", "--hypothesis-profile", "nightly"],
        capture_output=True, text=True, timeout=max(seconds * 3, 120),
        cwd=Path(__file__).resolve().parents[2])
    result.seconds = time.monotonic() - started
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    result.examples = 0
    if proc.returncode == 5:
        result.failures.append("no API fuzz test was collected")
    elif proc.returncode != 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "api.txt").write_text(proc.stdout + proc.stderr)
        result.failures.append(f"pytest: {tail[0]} (reproducer: api.txt)")
    return result


TARGETS: dict[str, Callable[[float, Path], FuzzResult]] = {
    "policy": fuzz_policy, "cni": fuzz_cni, "libnetwork": fuzz_libnetwork, "api": fuzz_api}
