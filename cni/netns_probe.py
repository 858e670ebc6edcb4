"""Read a container interface's addresses and routes from inside its netns (CHECK only).

``nsenter --net=PATH`` works for every netns path a runtime passes (``/var/run/netns/x``,
``/proc/PID/ns/net``, Mesos' bind-mounted ``.../ns``), where ``ip -n`` knows only names.
``ip -j`` gives JSON; one shell runs the three listings so CHECK costs one fork of
nsenter. Imported lazily by the CHECK command: ADD and DEL never pay for subprocess.
"""

from __future__ import annotations

import os
import subprocess

from . import codec
from .errors import INVALID_ENV, IO_FAILURE, CNIError

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

SEPARATOR = "--cilium-py-cni--"
_SCRIPT = (
    'ip -j addr show dev "$1" 2>/dev/null || echo "[]"; echo ' + SEPARATOR + "; "
    'ip -j -4 route show table main 2>/dev/null || echo "[]"; echo ' + SEPARATOR + "; "
    'ip -j -6 route show table main 2>/dev/null || echo "[]"'
)


def _parse_json_list(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    if not text:
        return []
    doc = codec.loads(text)
    return doc if isinstance(doc, list) else []


def split_listing(stdout: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shell's output -> (links, routes with their family tagged)."""
    parts = stdout.split(SEPARATOR)
    if len(parts) != 3:
        raise ValueError("unexpected output from ip inside the netns")
    links = _parse_json_list(parts[0])
    routes = []
    for family, part in ((4, parts[1]), (6, parts[2])):
        for route in _parse_json_list(part):
            routes.append({**route, "family": family})
    return links, routes


def list_interface(netns: str, ifname: str, timeout: float = 20) -> tuple[list, list]:
    """Links and routes as ``ip -j`` reports them inside ``netns``."""
    if not os.path.exists(netns):
        raise CNIError(INVALID_ENV, f"CNI_NETNS {netns} does not exist")
    cmd = ["nsenter", f"--net={netns}", "--", "sh", "-c", _SCRIPT, "probe", ifname]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(IO_FAILURE, f"cannot inspect {netns}", str(exc)) from None
    if proc.returncode != 0:
        raise CNIError(IO_FAILURE, f"cannot inspect {netns}", proc.stderr.strip()[:500])
    try:
        return split_listing(proc.stdout)
    except ValueError as exc:
        raise CNIError(IO_FAILURE, f"cannot read interfaces of {netns}", str(exc)) from None
