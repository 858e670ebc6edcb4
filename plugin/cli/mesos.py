"""``cilium-py mesos install``: the CNI plugin and network config for a Mesos agent.

Local file work only; the agent is not contacted (a Mesos node is usually set up before
its cilium-py agent starts).
"""

from __future__ import annotations

import argparse

from ..mesos import install as mesos_install
from .client import AgentClient, CLIError
from .output import print_json, print_table


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("mesos", help="Mesos agent integration")
    msub = p.add_subparsers(dest="mesos_cmd", metavar="SUBCOMMAND")
    msub.required = True
    inst = msub.add_parser(
        "install", parents=[parent],
        help="install cilium-py-cni and its network config for the Mesos CNI isolator")
    inst.add_argument("--config-dir", required=True, metavar="DIR",
                      help="the agent's --network_cni_config_dir")
    inst.add_argument("--plugins-dir", required=True, metavar="DIR",
                      help="the agent's --network_cni_plugins_dir")
    inst.add_argument("--network-name", default=mesos_install.NETWORK_NAME,
                      help="CNI network name tasks join (default: %(default)s)")
    inst.add_argument("--agent-socket", default=None, metavar="PATH",
                      help="the cilium-py agent's API socket the plugin calls "
                           "(default: --socket, $CILIUM_PY_SOCK or the agent's default)")
    inst.add_argument("--log-file", default=mesos_install.cni_install.DEFAULT_LOG,
                      metavar="PATH", help="the plugin's log file (default: %(default)s)")
    inst.set_defaults(func=run_install)


def run_install(args: argparse.Namespace, client: AgentClient) -> int:
    socket_path = args.agent_socket or client.socket_path
    try:
        files = mesos_install.install(args.config_dir, args.plugins_dir,
                                      name=args.network_name, socket_path=socket_path,
                                      log_file=args.log_file)
    except ValueError as exc:
        raise CLIError(str(exc), exit_code=2) from exc
    except OSError as exc:
        raise CLIError(f"cannot install into {exc.filename or 'the target'}: "
                       f"{exc.strerror}") from exc
    flags = mesos_install.agent_flags(args.config_dir, args.plugins_dir)
    if args.output == "json":
        print_json({"files": files, "network": args.network_name, "agent-flags": flags})
        return 0
    print_table(("FILE", "KIND", "STATUS"),
                [(f["path"], f["kind"], "written" if f["changed"] else "unchanged")
                 for f in files])
    print(f"\nStart mesos-agent with:\n  {' '.join(flags)}")
    print(f"and let tasks join the network {args.network_name!r} (see mesos/README.md).")
    return 0
