"""``cilium-py-agent``: the foreground daemon (systemd style).

Start-up order matters: configuration errors exit 2 naming the key; missing
prerequisites exit 1 with what to do; only then is the socket bound. The agent object is
built inside gunicorn's worker, so the process that serves requests is the one that owns
the state.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import AgentConfig, ConfigError, load_config
from ..logs import get_logger, setup_logging
from . import prereqs
from .lifetime import StateLock, StateLocked, die_with_parent

if TYPE_CHECKING:
    from ..datapath.contract import DatapathContract

log = get_logger("daemon")


def _agent_already_running(path: str) -> bool:
    if not os.path.exists(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def build_worker_app(config: AgentConfig, master: int | None = None):  # type: ignore[no-untyped-def]
    """Create the agent and its Flask app; runs in the gunicorn worker, which dies
    with its master (``master``: that process's pid; lifetime.py says why)."""
    from ..api.app import create_app
    from .agent import Agent

    if master is not None:
        die_with_parent(master)
    setup_logging(config.log_format, config.log_level)
    agent = Agent(config, datapath=make_datapath(config))
    build_worker_app.agent = agent  # type: ignore[attr-defined]
    agent.start_node()
    log.info("agent ready", extra={"fields": {"socket": config.socket}})
    return create_app(agent)


def make_datapath(config: AgentConfig) -> DatapathContract:
    """The BPF datapath, compiled once for this agent start."""
    from ..datapath import Datapath

    return Datapath(
        config.bpf_root,
        ipv4=bool(config.ipv4_pool),
        ipv6=bool(config.ipv6_pool),
        policy_size=config.policy_map_size,
        ipcache_size=config.ipcache_map_size,
        endpoint_size=config.endpoint_map_size,
        ct_size=config.ct_map_size,
    )


def _stop_worker_agent() -> None:
    agent = getattr(build_worker_app, "agent", None)
    if agent is not None:
        agent.shutdown()


def cleanup(config: AgentConfig) -> int:
    """``cilium-py-agent cleanup``: remove what the agent installs node-wide and keeps
    across restarts (a stop must not cut traffic): the masquerade and FORWARD rules and
    the socket-LB programs on their cgroup (host processes stop reaching services).
    Refused while an agent runs on this state directory. Endpoints, their programs and
    pinned maps stay: they go with their endpoints (DEL / docker rm)."""
    from ..datapath.loader import DatapathError
    from ..datapath.socklb import SocketLB
    from ..endpoint.masquerade import Masquerade

    if StateLock(config.state_dir).held_elsewhere() or _agent_already_running(config.socket):
        print("cilium-py-agent: cleanup refused: an agent is running on "
              f"{config.state_dir} / {config.socket}; stop it first", file=sys.stderr)
        return 1
    Masquerade(config.ipv4_pool, config.ipv6_pool).remove()
    log.info("masquerade and forward rules removed")
    print("removed the cilium-py masquerade and forward rules (CILIUM_PY_POSTROUTING, "
          "CILIUM_PY_FORWARD)")
    try:
        hooks = SocketLB(config.bpf_root).detach()
    except DatapathError as exc:
        print(f"cilium-py-agent: cleanup: socket LB: {exc}", file=sys.stderr)
        return 1
    log.info("socket LB detached", extra={"fields": {"hooks": hooks}})
    print(f"detached socket LB ({hooks} hooks pinned under {config.bpf_root})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args[:1] == ["cleanup"] else None
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"cilium-py-agent: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_format, config.log_level)
    if config.kubeconfig:
        from ..k8s.kubeconfig import KubeconfigError, load_kubeconfig

        try:
            load_kubeconfig(config.kubeconfig)
        except (KubeconfigError, OSError) as exc:
            print(f"cilium-py-agent: invalid configuration: kubeconfig: {exc}", file=sys.stderr)
            return 2

    if command == "cleanup":
        return cleanup(config)

    failing = [c for c in prereqs.run_all(config.bpf_root) if not c.ok]
    if failing:
        for check in failing:
            log.error(check.message, extra={"fields": {"check": check.name}})
            print(f"cilium-py-agent: cannot start: {check.message}", file=sys.stderr)
        return 1
    if _agent_already_running(config.socket):
        msg = f"another agent is already serving {config.socket}"
        print(f"cilium-py-agent: cannot start: {msg}", file=sys.stderr)
        return 1

    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    lock = StateLock(config.state_dir)
    try:
        # Held by this master and inherited by its worker until both are gone.
        lock.acquire(wait=10.0)
    except StateLocked as exc:
        log.error(str(exc), extra={"fields": {"lock": exc.path, "holder": exc.holder}})
        print(f"cilium-py-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    main.lock = lock  # type: ignore[attr-defined]
    from .server import AgentServer, prepare_socket_dir

    prepare_socket_dir(config.socket)
    log.info(
        "starting agent",
        extra={"fields": {"socket": config.socket, "state_dir": config.state_dir}},
    )
    master = os.getpid()
    server = AgentServer(
        lambda: build_worker_app(config, master),
        config.socket,
        config.threads,
        on_exit=_stop_worker_agent,
    )
    server.run()  # returns or exits when SIGTERM/SIGINT stop the master
    log.info("agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
