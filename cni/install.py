"""Put ``cilium-py-cni`` where runtimes look, and write the network config they read.

Runtimes exec the plugin by name from a plugins directory (``/opt/cni/bin`` for
kubelet/containerd/CRI-O, ``--network_cni_plugins_dir`` for Mesos). What we install
there is not the setuptools console script but a small launcher: it runs the
interpreter with ``-I -S`` (no ``site``, no ``.pth`` processing: the editable-install
finder alone imports pathlib and urllib and costs ~5 ms per exec) and sets up the
``cilium_py`` and ``cilium_py.cni`` packages from the directories recorded at install
time, so that editable and regular installs both work. Re-run the install after moving
the installation.

Used by ``cilium-py mesos install`` and by packaging (``python -m cilium_py.cni.install``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

PLUGIN_NAME = "cilium-py-cni"
CONFLIST_NAME = "05-cilium-py.conflist"
NETWORK_NAME = "cilium-py"
DEFAULT_SOCKET = "/var/run/cilium-py/cilium.sock"
DEFAULT_LOG = "/var/log/cilium-py/cni.log"
# The newest version Debian's reference plugins (portmap 1.1.x) accept in a chain.
CONFLIST_VERSION = "1.0.0"
# Where distributions put the reference plugins (Debian's containernetworking-plugins);
# runtimes look in /opt/cni/bin, so the chained ones are linked there.
REFERENCE_PLUGIN_DIRS = ("/usr/lib/cni", "/usr/libexec/cni")
PORTMAP = "portmap"


def package_locations() -> list[tuple[str, str, str]]:
    """(module name, ``__init__.py``, package directory) for the packages to preload.

    Read from the running installation, so editable and regular installs both work.
    """
    import cilium_py
    import cilium_py.cni

    out = []
    for mod in (cilium_py, cilium_py.cni):
        init = os.path.abspath(mod.__file__ or "")
        out.append((mod.__name__, init, os.path.dirname(init)))
    return out


def render_launcher(python: str, packages: Sequence[tuple[str, str, str]]) -> str:
    """The launcher script's text (pure: tested without writing anything)."""
    if any(c.isspace() for c in python) or not os.path.isabs(python):
        raise ValueError(f"the interpreter path must be absolute, without spaces: {python!r}")
    table = ",\n".join(f"    ({name!r}, {init!r}, {path!r})" for name, init, path in packages)
    return f"""#!{python} -IS
# cilium-py CNI plugin launcher, written by `cilium-py mesos install` or
# `python -m cilium_py.cni.install`. It skips site-packages processing to start fast and
# loads cilium-py from the directories below; re-run the install if they move.
import sys

for _name, _init, _path in (
{table},
):
    # A package module by hand: importlib.util alone would add ~3 ms to every exec.
    _mod = type(sys)(_name)
    _mod.__file__, _mod.__path__, _mod.__package__ = _init, [_path], _name
    sys.modules[_name] = _mod
    with open(_init, "rb") as _f:
        exec(compile(_f.read(), _init, "exec"), _mod.__dict__)

from cilium_py.cni.main import main  # noqa: E402

sys.exit(main())
"""


def cilium_plugin_conf(socket_path: str = DEFAULT_SOCKET, log_file: str = DEFAULT_LOG,
                       **extra: Any) -> dict[str, Any]:
    """The ``cilium-py-cni`` entry of a network config."""
    # Runtimes pass the plugin no environment of its own: the socket is spelled out.
    return {"type": PLUGIN_NAME, "agent-socket": socket_path, "log-file": log_file, **extra}


def render_conflist(socket_path: str = DEFAULT_SOCKET, log_file: str = DEFAULT_LOG,
                    name: str = NETWORK_NAME, portmap: bool = True) -> dict[str, Any]:
    """The conflist for ``/etc/cni/net.d``: cilium-py, then portmap for hostPort."""
    plugins = [cilium_plugin_conf(socket_path, log_file)]
    if portmap:
        plugins.append({"type": PORTMAP, "capabilities": {"portMappings": True}, "snat": True})
    return {"cniVersion": CONFLIST_VERSION, "name": name, "plugins": plugins}


def _runnable(path: str) -> bool:
    """An executable file (a symlink counts only if its target is one)."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def link_reference_plugin(plugins_dir: str, name: str = PORTMAP,
                          search: Sequence[str] = REFERENCE_PLUGIN_DIRS) -> tuple[str, str]:
    """Make ``<plugins_dir>/<name>`` runnable; returns (path, what was done).

    A runnable plugin already there is left alone ("present"); otherwise the first
    runnable one in ``search`` is symlinked ("linked", replacing a dangling link), or
    nothing is found ("missing"). A chain naming a plugin the runtime cannot find fails
    ADD, and DEL too before cilium-py is called, so the endpoint would leak.
    """
    path = os.path.join(plugins_dir, name)
    if _runnable(path):
        return path, "present"
    source = next((os.path.join(d, name) for d in search if _runnable(os.path.join(d, name))),
                  None)
    if source is None:
        return path, "missing"
    if os.path.lexists(path) and not os.path.islink(path):
        # A non-executable file we did not make: do not overwrite it.
        return path, "missing"
    os.makedirs(plugins_dir, exist_ok=True)
    tmp = os.path.join(plugins_dir, f".cilium-py-{name}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(source, tmp)
    os.replace(tmp, path)
    return path, "linked"


def write_file(path: str, text: str, mode: int) -> bool:
    """Atomically replace ``path`` (rename in its directory); False if unchanged.

    A runtime may exec the plugin while we install it: it sees the old file or the new
    one, never half of one.
    """
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text and (os.stat(path).st_mode & 0o777) == mode:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cilium-py-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def install_plugin(plugins_dir: str, python: str | None = None) -> tuple[str, bool]:
    """Write the launcher as ``<plugins_dir>/cilium-py-cni``; (path, changed)."""
    path = os.path.join(plugins_dir, PLUGIN_NAME)
    text = render_launcher(python or sys.executable, package_locations())
    return path, write_file(path, text, 0o755)


def install_conflist(config_dir: str, socket_path: str = DEFAULT_SOCKET,
                     log_file: str = DEFAULT_LOG, portmap: bool = True) -> tuple[str, bool]:
    path = os.path.join(config_dir, CONFLIST_NAME)
    text = json.dumps(render_conflist(socket_path, log_file, portmap=portmap), indent=2) + "\n"
    return path, write_file(path, text, 0o644)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cilium_py.cni.install``: for Kubernetes nodes and packaging."""
    p = argparse.ArgumentParser(prog="python -m cilium_py.cni.install",
                                description="Install cilium-py-cni and its conflist.")
    p.add_argument("--plugins-dir", default="/opt/cni/bin")
    p.add_argument("--config-dir", default="/etc/cni/net.d",
                   help="where the conflist goes; '' to skip it")
    p.add_argument("--agent-socket", default=DEFAULT_SOCKET)
    p.add_argument("--log-file", default=DEFAULT_LOG)
    p.add_argument("--reference-plugins-dir", action="append", default=None,
                   help="where to find portmap when the plugins dir has none (repeatable; "
                        f"default {' '.join(REFERENCE_PLUGIN_DIRS)})")
    args = p.parse_args(argv)
    path, changed = install_plugin(args.plugins_dir)
    print(f"{'installed' if changed else 'unchanged'}: {path}")
    if args.config_dir:
        search = args.reference_plugins_dir or REFERENCE_PLUGIN_DIRS
        portmap_path, done = link_reference_plugin(args.plugins_dir, PORTMAP, search)
        if done == "missing":
            # A conflist naming a plugin that is not there breaks ADD and DEL alike:
            # write the chain that works, and say what hostPort needs.
            print(f"warning: no {PORTMAP} in {args.plugins_dir} or {' '.join(search)} "
                  "(install containernetworking-plugins): the conflist leaves it out, "
                  "so hostPort mappings are not honoured", file=sys.stderr)
        else:
            print(f"{done}: {portmap_path}"
                  + (f" -> {os.readlink(portmap_path)}" if done == "linked" else ""))
        path, changed = install_conflist(args.config_dir, args.agent_socket, args.log_file,
                                         portmap=done != "missing")
        print(f"{'installed' if changed else 'unchanged'}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
