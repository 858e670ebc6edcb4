"""End-to-end fixtures: a real dockerd, a real agent in the root namespace, the plugin.

See :mod:`docker_e2e` for what they make and how it is named and removed.

The fixtures are session-scoped (one dockerd, agent and plugin for all Docker tests),
but an agent in the root namespace must not outlive the Docker tests: the rest of the
suite runs for many minutes after them. So what they set up is undone as soon as the
last Docker test is done (:func:`pytest_runtest_teardown`), not at the end of the
session; a failure or ``-x`` still undoes it through the fixtures' own finalizers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from docker_e2e import (
    IMAGE,
    DockerEnv,
    Plugin,
    build_busybox_image,
    docker,
    dockerd_running,
    run,
    start_root_agent,
)
from stale_networks import remove_stale_test_networks

from tests.conftest import require_root

HERE = Path(__file__).parent
_made = ExitStack()  # the session's Docker stack, undone last-made first


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last Docker test (and its own fixtures' teardown), remove the session's
    Docker stack."""
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        _made.close()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[None]:
    """A running dockerd; started (and later stopped by pid) only if none was running."""
    require_root()
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (packaging/install.sh test installs it)")
    try:
        _made.enter_context(dockerd_running("cpyt-dockerd.log"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    # Networks of killed sessions slow every later dockerd start by ~15 s each.
    remove_stale_test_networks()
    yield
    _made.close()


@pytest.fixture(scope="session")
def image(dockerd: None) -> Iterator[str]:
    _made.callback(docker, "rmi", "-f", IMAGE, check=False)
    build_busybox_image(IMAGE)
    yield IMAGE
    _made.close()


def _remove_stack(env: DockerEnv | None, plugin: Plugin, router: str, bpf_root: str,
                  workdir: str) -> None:
    if env is not None:
        env.cleanup()
        plugin.stop()
        env.agent.stop()
        # A stop keeps the masquerade/FORWARD rules (traffic survives restarts); the
        # explicit cleanup takes them away.
        run(env.agent.proc.args[0], "cleanup", *env.agent.proc.args[1:], check=False)
    if os.path.exists(plugin.socket):
        os.unlink(plugin.socket)
    plugin.remove_chains()
    run("ip", "link", "del", router, check=False)
    shutil.rmtree(bpf_root, ignore_errors=True)
    if os.environ.get("CPYT_KEEP_LOGS"):
        print(f"docker e2e logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_env(dockerd: None, image: str) -> Iterator[DockerEnv]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"cpyt-{tag}"
    workdir = tempfile.mkdtemp(prefix="cpyt-docker-")
    bpf_root = f"/sys/fs/bpf/{prefix}"
    router = f"cpyth{tag}"  # 11 characters: its peer "<router>_net" must fit in 15
    plugin = Plugin(
        name=prefix,
        socket=f"/run/docker/plugins/{prefix}.sock",
        agent_socket=os.path.join(workdir, "agent.sock"),
        state_file=os.path.join(workdir, "driver.json"),
        log_path=os.path.join(workdir, "plugin.log"),
    )
    made: dict[str, DockerEnv] = {}
    _made.callback(lambda: _remove_stack(made.get("env"), plugin, router, bpf_root, workdir))
    agent = start_root_agent(workdir, bpf_root, router)
    env = made["env"] = DockerEnv(prefix, agent, plugin, image, workdir)
    plugin.start()
    yield env
    _made.close()


@pytest.fixture
def env(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    """Per test: whatever the test made is removed afterwards, pass or fail."""
    try:
        yield docker_env
    finally:
        docker_env.cleanup()


@pytest.fixture
def outside(docker_env: DockerEnv) -> Iterator[tuple[str, str]]:
    """An "outside" host: a namespace on a veth to the root namespace, 198.51.100.0/24.

    Yields (namespace name, the host's address as seen from outside).
    """
    ns = f"{docker_env.prefix}-out"
    host_if, peer_if = f"cpyto{docker_env.prefix[5:]}", f"cpytp{docker_env.prefix[5:]}"
    steps = [
        ("ip", "netns", "add", ns),
        ("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if),
        ("ip", "link", "set", peer_if, "netns", ns),
        ("ip", "addr", "add", "198.51.100.1/24", "dev", host_if),
        ("ip", "link", "set", host_if, "up"),
        ("ip", "-n", ns, "addr", "add", "198.51.100.2/24", "dev", peer_if),
        ("ip", "-n", ns, "link", "set", peer_if, "up"),
        ("ip", "-n", ns, "link", "set", "lo", "up"),
        ("ip", "-n", ns, "route", "add", "default", "via", "198.51.100.1"),
    ]
    try:
        for step in steps:
            run(*step)
        yield ns, "198.51.100.1"
    finally:
        run("ip", "link", "del", host_if, check=False)
        run("ip", "netns", "del", ns, check=False)
