"""``cilium-py-docker``: the libnetwork plugin process (foreground, systemd style).

It is its own process so that it can restart without touching the agent or the
containers: the datapath lives in the kernel, addresses and endpoints in the agent, port
rules in iptables, and the little the driver remembers in its state file. On start-up
it reconciles that file and the port rules with the agent's endpoints.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from ..config import DEFAULT_SOCKET
from ..errors import CiliumPyError
from ..logs import get_logger, setup_logging
from .agent_api import HTTPAgentAPI
from .isolation import Isolation
from .ports import Binding, Chains, IptablesPublisher, instance_of
from .server import DEFAULT_PLUGIN_SOCKET, PluginServer, prepare_plugin_socket
from .state import DriverState

log = get_logger("docker.main")

DEFAULT_STATE_FILE = "/var/lib/cilium-py/docker-driver.json"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="cilium-py-docker",
        description="cilium-py's Docker libnetwork network and IPAM driver.",
    )
    # CILIUM_PY_SOCKET is the agent's own setting (e.g. in /etc/default/cilium-py), so a
    # shared environment file points both at the same socket.
    agent_socket = env("CILIUM_PY_SOCK") or env("CILIUM_PY_SOCKET") or DEFAULT_SOCKET
    parser.add_argument("--agent-socket", default=agent_socket,
                        help="the agent's API socket (default: %(default)s; env "
                             "CILIUM_PY_SOCK or CILIUM_PY_SOCKET)")
    parser.add_argument("--plugin-socket",
                        default=env("CILIUM_PY_DOCKER_SOCKET") or DEFAULT_PLUGIN_SOCKET,
                        help="where dockerd looks for the plugin (default: %(default)s)")
    parser.add_argument("--state-file",
                        default=env("CILIUM_PY_DOCKER_STATE") or DEFAULT_STATE_FILE,
                        help="the driver's small state file (default: %(default)s)")
    parser.add_argument("--watch-labels", action="store_true",
                        help="also run the container label watcher here, for an agent "
                             "that does not run it itself")
    parser.add_argument("--docker-url", default="unix:///var/run/docker.sock",
                        help="dockerd's API, for --watch-labels (default: %(default)s)")
    parser.add_argument("--remove-port-chains", action="store_true",
                        help="remove this instance's iptables chains (those of the driver "
                             "named by --plugin-socket; only when none of its rules is in "
                             "use) and exit; for uninstalling")
    parser.add_argument("--threads", type=int, default=8, help="request threads")
    parser.add_argument("--log-format", choices=("json", "console"), default="json")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="info")
    return parser


def _serving(path: str) -> bool:
    """True when another process already answers on ``path``."""
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
            return True
        except OSError:
            return False


def reconcile(agent: HTTPAgentAPI, state: DriverState, ports: IptablesPublisher,
              isolation: Isolation) -> None:
    """Forget endpoints the agent no longer has and remove their port and isolation rules.

    Only this instance's rules are looked at (:class:`.ports.Chains`): another plugin on
    the host, with another agent, keeps its ports. Best effort: with the agent down it
    does nothing, and the next start retries.
    """
    try:
        live = {ep.get("id") for ep in agent.list_endpoints()}
    except CiliumPyError as exc:
        log.warning("agent unreachable; skipping reconciliation",
                    extra={"fields": {"error": exc.message}})
        return
    stale = {eid for eid in state.snapshot()["endpoints"] if eid not in live}
    for rules in (ports, isolation):
        try:
            stale |= {eid for eid in rules.endpoints_with_rules() if eid not in live}
        except CiliumPyError as exc:
            log.warning("cannot list rules", extra={"fields": {"error": exc.message}})
    for eid in stale:
        ports.revoke(eid)
        isolation.release(eid)
    if stale:
        with state.edit() as doc:
            for eid in stale:
                doc["endpoints"].pop(eid, None)
        log.info("reconciled", extra={"fields": {"forgotten": sorted(stale)}})


def publisher_for(plugin_socket: str) -> IptablesPublisher:
    """The port publisher of the instance serving ``plugin_socket``."""
    return IptablesPublisher(chains=Chains(instance_of(plugin_socket)))


def isolation_for(plugin_socket: str) -> Isolation:
    """The internal-network rules of the instance serving ``plugin_socket``."""
    return Isolation(chains=Chains(instance_of(plugin_socket)))


def build_app(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Runs in the gunicorn worker, which owns the state and serves the calls."""
    from .app import create_app

    setup_logging(args.log_format, args.log_level)
    agent = HTTPAgentAPI(args.agent_socket)
    state = DriverState(args.state_file)
    ports = publisher_for(args.plugin_socket)
    isolation = isolation_for(args.plugin_socket)
    reconcile(agent, state, ports, isolation)
    for eid, record in state.snapshot()["endpoints"].items():
        if record.get("ports"):
            ports.hold_published(eid, [Binding(**b) for b in record["ports"]],
                                 record.get("ipv4"), record.get("ipv6"))
    if args.watch_labels:
        from .labels import DockerLabelWatcher

        watcher = DockerLabelWatcher(agent.set_labels, docker_url=args.docker_url)
        watcher.start()
        build_app.watcher = watcher  # type: ignore[attr-defined]
    log.info("docker driver ready", extra={"fields": {
        "plugin_socket": args.plugin_socket, "agent_socket": args.agent_socket,
        "port_chains": [ports.chains.nat, ports.chains.fwd, ports.chains.internal]}})
    return create_app(agent, state, ports, isolation)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    if args.remove_port_chains:
        if (publisher_for(args.plugin_socket).remove_chains()
                and isolation_for(args.plugin_socket).remove_chains()):
            return 0
        print("cilium-py-docker: ports are still published or containers on internal "
              "networks remain; remove those containers first", file=sys.stderr)
        return 1
    if _serving(args.plugin_socket):
        print(f"cilium-py-docker: cannot start: another process serves {args.plugin_socket}",
              file=sys.stderr)
        return 1
    prepare_plugin_socket(args.plugin_socket)
    log.info("starting docker driver", extra={"fields": {"plugin_socket": args.plugin_socket}})
    PluginServer(lambda: build_app(args), args.plugin_socket, args.threads).run()
    log.info("docker driver stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
