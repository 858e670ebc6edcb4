"""Start-up checks say what to do when a prerequisite is missing."""

from __future__ import annotations

from pathlib import Path

from cilium_py.agent import prereqs


def test_not_root_says_so() -> None:
    check = prereqs.check_root(euid=1000)
    assert not check.ok and "must run as root" in check.message


def test_bpffs_missing_tells_how_to_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("sysfs /sys sysfs rw 0 0\n")
    check = prereqs.check_bpffs("/sys/fs/bpf/cilium-py", proc_mounts=str(mounts))
    assert not check.ok
    assert "mount -t bpf bpf /sys/fs/bpf" in check.message


def test_bpffs_present(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n")
    assert prereqs.check_bpffs("/sys/fs/bpf/cilium-py", proc_mounts=str(mounts)).ok


def test_missing_tc_options_named(tmp_path: Path) -> None:
    import gzip

    cfg = tmp_path / "config.gz"
    with gzip.open(cfg, "wt") as fh:
        fh.write(
            "CONFIG_NET_SCH_INGRESS=y\n# CONFIG_NET_CLS_BPF is not set\nCONFIG_NET_CLS_ACT=y\n"
        )
    check = prereqs.check_tc(config_gz=str(cfg), probe=False)
    assert not check.ok and "CONFIG_NET_CLS_BPF" in check.message


def test_missing_headers_point_at_fix(tmp_path: Path) -> None:
    check = prereqs.check_kernel_headers(release="9.9.9-test", modules_dir=str(tmp_path))
    assert not check.ok
    assert "linux-headers-9.9.9-test" in check.message
    assert "--link-headers" in check.message
    (tmp_path / "9.9.9-test" / "build" / "include").mkdir(parents=True)
    assert prereqs.check_kernel_headers(release="9.9.9-test", modules_dir=str(tmp_path)).ok


def test_bcc_missing_names_the_package(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "bcc":
            raise ImportError("no bcc")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    check = prereqs.check_bcc()
    assert not check.ok and "python3-bpfcc" in check.message
