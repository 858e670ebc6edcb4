"""Installing the plugin launcher and configs; the shipped files match what is rendered."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cilium_py.cli.client import AgentClient, CLIError
from cilium_py.cni import install
from cilium_py.cni.version import SUPPORTED
from cilium_py.mesos import install as mesos_install

REPO = Path(__file__).resolve().parents[3]


def test_launcher_text() -> None:
    text = install.render_launcher("/usr/bin/python3", [("cilium_py", "/x/__init__.py", "/x")])
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "('cilium_py', '/x/__init__.py', '/x')" in text
    compile(text, "launcher", "exec")
    for bad in ("python3", "/opt/my venv/bin/python"):
        with pytest.raises(ValueError):
            install.render_launcher(bad, [])


def test_installed_launcher_runs_and_reinstall_is_a_no_op(tmp_path: Path) -> None:
    path, changed = install.install_plugin(str(tmp_path / "bin"))
    assert changed and path == str(tmp_path / "bin" / "cilium-py-cni")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    proc = subprocess.run([path], input=b'{"cniVersion": "0.4.0"}', capture_output=True,
                          env={"CNI_COMMAND": "VERSION"}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"cniVersion": "0.4.0",
                                       "supportedVersions": list(SUPPORTED)}
    assert install.install_plugin(str(tmp_path / "bin")) == (path, False)
    assert [p.name for p in (tmp_path / "bin").iterdir()] == ["cilium-py-cni"]


def fake_reference_plugins(path: Path) -> Path:
    """A stand-in for Debian's /usr/lib/cni holding an executable portmap."""
    path.mkdir()
    portmap = path / "portmap"
    portmap.write_text("#!/bin/sh\necho '{\"cniVersion\": \"1.0.0\"}'\n")
    portmap.chmod(0o755)
    return portmap


def test_module_entry_installs_plugin_and_conflist(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # The conflist chains portmap: the plugins dir must have one that runs, else ADD and
    # DEL fail before cilium-py is called (issue 11 item 14).
    portmap = fake_reference_plugins(tmp_path / "usr-lib-cni")
    argv = ["--plugins-dir", str(tmp_path / "bin"), "--config-dir", str(tmp_path / "net.d"),
            "--reference-plugins-dir", str(tmp_path / "none"),
            "--reference-plugins-dir", str(portmap.parent)]
    assert install.main(argv) == 0
    conflist = json.loads((tmp_path / "net.d" / "05-cilium-py.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["cilium-py-cni", "portmap"]
    linked = tmp_path / "bin" / "portmap"
    assert os.readlink(linked) == str(portmap)
    assert subprocess.run([str(linked)], capture_output=True).returncode == 0
    assert f"linked: {linked} -> {portmap}" in capsys.readouterr().out
    assert install.main(argv) == 0
    assert f"present: {linked}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["cilium-py-cni", "portmap"]


def test_portmap_already_installed_is_left_alone(tmp_path: Path) -> None:
    own = fake_reference_plugins(tmp_path / "bin")
    own.write_text("#!/bin/sh\n# the operator's own portmap\n")
    fake_reference_plugins(tmp_path / "ref")
    assert install.link_reference_plugin(str(tmp_path / "bin"), "portmap",
                                         [str(tmp_path / "ref")]) == (str(own), "present")
    assert not own.is_symlink() and "operator" in own.read_text()


def test_dangling_portmap_link_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "portmap").symlink_to(tmp_path / "gone")
    ref = fake_reference_plugins(tmp_path / "ref")
    path, done = install.link_reference_plugin(str(tmp_path / "bin"), "portmap",
                                               [str(ref.parent)])
    assert done == "linked" and os.readlink(path) == str(ref)


def test_without_portmap_anywhere_the_conflist_leaves_it_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert install.main(["--plugins-dir", str(tmp_path / "bin"),
                         "--config-dir", str(tmp_path / "net.d"),
                         "--reference-plugins-dir", str(tmp_path / "none")]) == 0
    conflist = json.loads((tmp_path / "net.d" / "05-cilium-py.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["cilium-py-cni"]
    assert "no portmap" in capsys.readouterr().err
    assert not (tmp_path / "bin" / "portmap").exists()


def test_install_sh_installs_the_reference_plugins() -> None:
    script = (REPO / "packaging/install.sh").read_text()
    deps = script[script.index("deps() {"):script.index("wait_healthy()")]
    assert "containernetworking-plugins" in deps


def test_shipped_conflist_is_the_rendered_one() -> None:
    shipped = json.loads((REPO / "packaging/cni/05-cilium-py.conflist").read_text())
    assert shipped == install.render_conflist()
    assert shipped["plugins"][1] == {"type": "portmap", "capabilities": {"portMappings": True},
                                     "snat": True}


def test_shipped_mesos_config_is_the_rendered_one() -> None:
    shipped = json.loads((REPO / "mesos/cilium-py.conf").read_text())
    assert shipped == mesos_install.network_config()
    assert shipped["cniVersion"] == "0.2.0" and "plugins" not in shipped


def cli(argv: list[str]) -> int:
    from cilium_py.cli import mesos as mesos_cli

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-o", "--output", default="table")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    mesos_cli.register(sub, parent)
    args = parser.parse_args(argv)
    return args.func(args, AgentClient("/run/cpyt-test/agent.sock"))


def test_mesos_install_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf_dir, plugins_dir = tmp_path / "cni-conf", tmp_path / "cni-bin"
    argv = ["mesos", "install", "--config-dir", str(conf_dir), "--plugins-dir",
            str(plugins_dir), "-o", "json"]
    assert cli(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["changed"] for f in report["files"]] == [True, True]
    assert f"--network_cni_config_dir={conf_dir}" in report["agent-flags"]
    conf = json.loads((conf_dir / "cilium-py.conf").read_text())
    assert conf["agent-socket"] == "/run/cpyt-test/agent.sock"
    assert conf["type"] == "cilium-py-cni" and (plugins_dir / "cilium-py-cni").exists()
    assert cli(argv) == 0
    assert [f["changed"] for f in json.loads(capsys.readouterr().out)["files"]] == [False, False]
    assert cli(argv[:-2] + ["--network-name", "blue", "--agent-socket", "/run/a.sock"]) == 0
    assert "written" in capsys.readouterr().out
    blue = json.loads((conf_dir / "blue.conf").read_text())
    assert (blue["name"], blue["agent-socket"]) == ("blue", "/run/a.sock")


def test_mesos_install_refuses_bad_network_names(tmp_path: Path) -> None:
    with pytest.raises(CLIError) as exc:
        cli(["mesos", "install", "--config-dir", str(tmp_path), "--plugins-dir",
             str(tmp_path), "--network-name", "../etc/passwd"])
    assert exc.value.exit_code == 2


def load_example(name: str) -> dict:
    return json.loads((REPO / "mesos/examples" / name).read_text())


@pytest.mark.parametrize("app", ["web", "client"])
def test_marathon_examples_in_both_forms(app: str) -> None:
    old = load_example(f"{app}-marathon-1.4.json")
    new = load_example(f"{app}-marathon-1.5.json")
    assert old["ipAddress"]["networkName"] == mesos_install.NETWORK_NAME
    assert new["networks"][0]["mode"] == "container"
    assert new["networks"][0]["name"] == mesos_install.NETWORK_NAME
    assert old["ipAddress"]["labels"] == new["networks"][0]["labels"]
    assert old["ipAddress"]["labels"]["app"] == app


def test_example_policy_selects_the_example_labels() -> None:
    from cilium_py.labels import LabelSet
    from cilium_py.policy.schema import parse_policy

    (rule,) = parse_policy(load_example("policy.json"))

    def labels(app: str) -> LabelSet:
        kv = load_example(f"{app}-marathon-1.5.json")["networks"][0]["labels"]
        return LabelSet.parse([f"mesos:{k}={v}" for k, v in kv.items()])

    assert rule.endpoint_selector.matches(labels("web"))
    assert not rule.endpoint_selector.matches(labels("client"))
    assert rule.ingress[0].endpoints[0].matches(labels("client"))
