"""The client, and the CNI plugin through it, import nothing heavy (issue 12).

Every CNI exec is a fresh interpreter, so each import is paid per ADD and DEL. Checked
in a subprocess, as the plugin really runs: through the installed launcher's own
preamble (``-I -S``, packages loaded from their recorded directories), and also in a
plain interpreter for the client package alone.
"""

from __future__ import annotations

import subprocess
import sys

from cilium_py.cni import install

# The agent's and the CLI's dependencies, none of which a CNI exec may load.
HEAVY = {"pyroute2", "flask", "werkzeug", "requests", "requests_unixsocket", "urllib3",
         "bcc", "marshmallow", "gunicorn"}
# Standard-library modules the plugin avoids for start-up time (see cilium_py.client).
SLOW = {"http", "email", "json", "socket", "typing", "re", "urllib", "threading",
        "contextlib", "logging"}

PROBE = """
import sys
before = set(sys.modules)
{imports}
print(" ".join(sorted(set(sys.modules) - before)))
"""


def launcher_probe(imports: str) -> str:
    """The installed launcher's text with its last lines replaced by ``imports``."""
    text = install.render_launcher(sys.executable, install.package_locations())
    preamble = text.split("from cilium_py.cni.main import main")[0]
    return preamble + PROBE.format(imports=imports)


def new_modules(args: list[str]) -> set[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {name.split(".")[0] for name in proc.stdout.split()}


def test_cni_add_path_through_the_launcher() -> None:
    imports = ("from cilium_py.cni import main, commands\n"
               "from cilium_py.client import agent, errors, transport, wire, codec")
    loaded = new_modules([sys.executable, "-I", "-S", "-c", launcher_probe(imports)])
    assert "cilium_py" in loaded
    assert not loaded & HEAVY, loaded & HEAVY
    assert not loaded & SLOW, loaded & SLOW


def test_client_package_alone_in_a_plain_interpreter() -> None:
    imports = "import cilium_py.client.agent, cilium_py.client.errors, cilium_py.cni.main"
    loaded = new_modules([sys.executable, "-c", PROBE.format(imports=imports)])
    assert not loaded & HEAVY, loaded & HEAVY


def test_version_needs_no_client_but_the_codec() -> None:
    """VERSION (libcni's probe) imports only main's modules: no transport, no errors."""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", launcher_probe(
        "from cilium_py.cni import main")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert "cilium_py.client.codec" in names
    assert not {"cilium_py.client.agent", "cilium_py.client.transport",
                "cilium_py.errors"} & names
