"""BPF toolchain smoke test: compile, attach, verify, detach one trivial program.

Run it first when something in the datapath fails in a new environment: it
separates "bcc/clang/kernel headers do not work" and "tc attach does not work"
from bugs in the real programs. It uses the same attach code as the datapath.

It works in the network namespace of the calling process and leaves the device
as it found it (clsact is removed only when this call created it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from pyroute2 import IPRoute

from . import attach, bpfsys

SMOKE_PROGRAM = "smoke_count"
# A priority of its own, so that the smoke test never replaces (or removes) the
# datapath's filter, which sits at attach.DEFAULT_PRIO.
SMOKE_PRIO = 0xC000


def smoke_source() -> str:
    """Text of bpf/smoke.c, read from the installed cilium_py.bpf package data."""
    return resources.files("cilium_py.bpf").joinpath("smoke.c").read_text()


def _read_counter(table: Any) -> tuple[int, int]:
    packets = bytes_ = 0
    for per_cpu in table.values():
        for value in per_cpu:
            packets += int(value.packets)
            bytes_ += int(value.bytes)
    return packets, bytes_


def smoke_test(ifname: str, *, during: Callable[[], object] | None = None) -> dict[str, Any]:
    """Compile bpf/smoke.c, attach it to tc ingress of ``ifname``, check, detach.

    ``during`` runs while the program is attached, so that a caller can send
    traffic through it; the packet count read afterwards is returned.
    """
    from bcc import BPF  # imported here: compiling needs root and kernel headers

    started = time.monotonic()
    bpf = BPF(text=smoke_source())
    compile_s = time.monotonic() - started
    try:
        fn = bpf.load_func(SMOKE_PROGRAM, BPF.SCHED_CLS)
        expected_id = bpfsys.prog_id(fn.fd)
        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=ifname)
            if not links:
                raise LookupError(f"no device named {ifname!r} in this namespace")
            ifindex = links[0]
            created = attach.ensure_clsact(ipr, ifindex)
            try:
                attach.attach_program(ipr, ifindex, "ingress", fn.fd, SMOKE_PROGRAM,
                                      prio=SMOKE_PRIO)
                filters = attach.list_filters(ipr, ifindex, "ingress")
                ours = [f for f in filters if f.prog_id == expected_id]
                attached = bool(ours) and ours[0].direct_action
                if during is not None:
                    during()
                packets, bytes_ = _read_counter(bpf["smoke_counter"])
            finally:
                attach.detach_program(ipr, ifindex, "ingress", prio=SMOKE_PRIO)
                if created:
                    attach.remove_clsact(ipr, ifindex)
            left = [f for f in attach.list_filters(ipr, ifindex, "ingress")
                    if f.prog_id == expected_id]
            return {
                "ifname": ifname,
                "ifindex": ifindex,
                "prog_id": expected_id,
                "attached": attached,
                "direct_action": bool(ours) and ours[0].direct_action,
                "detached": not left,
                "created_clsact": created,
                "clsact_left": attach.has_clsact(ipr, ifindex),
                "packets": packets,
                "bytes": bytes_,
                "compile_seconds": round(compile_s, 3),
            }
    finally:
        bpf.cleanup()
