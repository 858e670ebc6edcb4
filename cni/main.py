"""``cilium-py-cni``: the CNI plugin binary that kubelet, containerd, CRI-O and Mesos exec.

One exec, one command: read CNI_* and the stdin config, ask the agent, print the result
(or the spec's error object) on stdout, exit 0 (or 1). Every failure reaches the
runtime through the single ``except CNIError`` below; anything unexpected becomes code
100 with the traceback in the log file, never a Python traceback on stdout.
"""

from __future__ import annotations

import os
import sys
import time

from ..client import codec
from . import version
from .errors import INTERNAL, CNIError
from .invocation import DEFAULT_LOG_FILE, decode, parse_netconf, peek_version, read_environment
from .log import Log

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

# Where messages go before the config (which may name another file) has been read.
LOG_ENV = "CILIUM_PY_CNI_LOG"


def _emit(out: TextIO, doc: dict[str, Any]) -> None:
    out.write(codec.dumps(doc) + "\n")
    out.flush()


def run(environ: Mapping[str, str], stdin: bytes, out: TextIO, log: Log) -> int:
    """The whole plugin minus process set-up; returns the exit code."""
    started = time.monotonic()
    cni_version = version.LATEST
    command = environ.get("CNI_COMMAND", "")
    if command != "VERSION":
        # Errors, even about the environment, are worded in the config's version.
        cni_version = peek_version(stdin)
    try:
        if command == "VERSION":
            # VERSION needs nothing but the command: libcni's probe (run by CRI-O and
            # podman before they use a network) sets CNI_NETNS=dummy and other dummies,
            # which must not fail the probe and so hide the network.
            requested = peek_version(stdin) if stdin.strip() else None
            _emit(out, version.version_info(requested))
            return 0
        env = read_environment(environ)
        log.configure(log.path, "info", command=command, container=env.container_id,
                      ifname=env.ifname)
        from ..client.agent import AgentClient  # only past VERSION, which needs none of it
        from . import commands

        conf = parse_netconf(decode(stdin))
        cni_version = conf.cni_version
        # The config's log-file wins; without one, keep the default (or $CILIUM_PY_CNI_LOG).
        log_path = conf.log_file if "log-file" in conf.raw else log.path
        log.configure(log_path, conf.log_level, network=conf.name)
        client = AgentClient(conf.agent_socket, commands.AGENT_TIMEOUT,
                             user_agent="cilium-py-cni")
        doc = commands.run(env, conf, client, log)
        if doc is not None:
            _emit(out, doc)
        log.info(f"{command} done", ms=round((time.monotonic() - started) * 1000, 1))
        return 0
    except CNIError as exc:
        log.error(f"{command or 'command'} failed: {exc.msg}", code=exc.code,
                  details=exc.details)
        _emit(out, exc.to_json(cni_version))
        return 1
    except Exception as exc:  # noqa: BLE001 - the runtime must get a CNI error, not a trace
        import traceback

        log.error(f"{command or 'command'} crashed: {exc!r}", trace=traceback.format_exc())
        _emit(out, CNIError(INTERNAL, f"internal error in cilium-py-cni: {exc!r}",
                            "see the plugin's log file").to_json(cni_version))
        return 1


def main() -> int:
    """Console-script entry: stdout is reserved for the one result document."""
    out = sys.stdout
    # Anything printed by accident (ours or a library's) lands in stderr instead.
    sys.stdout = sys.stderr
    log = Log(os.environ.get(LOG_ENV) or DEFAULT_LOG_FILE)
    try:
        stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
        return run(os.environ, stdin, out, log)
    finally:
        log.close()
        sys.stdout = out


if __name__ == "__main__":
    sys.exit(main())
