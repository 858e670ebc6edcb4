"""Every package of the tree is installed: setup.cfg lists each one under cilium_py.

An editable install finds subpackages by path, so a package missing from the list works
in the tests and is absent from a real install (`install.sh start`): check the list.
"""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_cfg_lists_every_package() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    dirs = {
        line.split("=")[0].strip(): line.split("=")[1].strip()
        for line in cfg["options"]["package_dir"].strip().splitlines()
    }
    found = set()
    for name, rel in dirs.items():
        base = ROOT / rel
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            if any(p.startswith((".", "__")) for p in parts):
                continue
            sub = ".".join(parts)
            found.add(f"{name}.{sub}" if sub else name)
    # A sub-directory mapped on its own (cilium_py.cni = cni) is found twice: once as
    # itself and not as part of another; keep the names that map to a listed directory.
    assert found - listed == set(), f"add to setup.cfg [options] packages: {found - listed}"
