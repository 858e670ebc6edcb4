"""``cilium-py``: the command-line client of the agent.

Every command takes ``-o json`` for scripts. Any failure is one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import (
    bpf,
    bugtool,
    endpoint,
    health,
    identity,
    mesos,
    monitor,
    node,
    policy,
    service,
    status,
)
from .client import AgentClient, CLIError, default_socket

COMMANDS = [status, endpoint, identity, policy, service, monitor, bpf, node, health, mesos,
            bugtool]


def build_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
        help="output format (json for scripts)",
    )
    parent.add_argument(
        "--socket", default=argparse.SUPPRESS,
        help="agent API socket (env CILIUM_PY_SOCK; default /var/run/cilium-py/cilium.sock)",
    )
    parent.add_argument(
        "--api-timeout", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
        help="how long to wait for the agent's answer (env CILIUM_PY_TIMEOUT; default 30)",
    )
    parser = argparse.ArgumentParser(prog="cilium-py", parents=[parent],
                                     description="Command-line client of cilium-py-agent.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub, parent)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.output = getattr(args, "output", "table")
    timeout = getattr(args, "api_timeout", None)
    if timeout is None and os.environ.get("CILIUM_PY_TIMEOUT"):
        try:
            timeout = _seconds(os.environ["CILIUM_PY_TIMEOUT"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"CILIUM_PY_TIMEOUT: {exc}")
    client = AgentClient(getattr(args, "socket", None) or default_socket(),
                         timeout=timeout or 30.0)
    try:
        return int(args.func(args, client) or 0)
    except CLIError as exc:
        print(f"cilium-py: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
