"""Endpoint veths deleted off the request path.

Why: deleting a veth costs the kernel 12-25 ms here, nearly all of it waiting for RCU
grace periods after the device is unregistered, while everything the caller can
observe is over sooner: once the endpoint's map entries are gone, its programs drop
whatever still reaches the veth, and the agent no longer lists it. So an endpoint
delete answers then, and this one thread removes the veth afterwards, the way the
kernel itself tears a deleted network namespace down in the background. Cilium's CNI
plugin and the reference plugins pay the whole wait inside DEL.

What keeps it safe:

- the endpoint's addresses are released only once its veth is gone (``then``), so no
  new endpoint can be given an address whose host route still points at the old veth;
- an attach into the same network namespace, or under the same host interface name,
  first waits for the pending delete (``wait_for``), so a container that is detached
  and attached again at once never finds its old interface in the way;
- the agent drains the queue when it stops, and a crash in between is repaired by the
  start-up sweep, which removes the veths still recorded as being reaped (never
  another agent instance's) and addresses that no endpoint owns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..logs import get_logger

log = get_logger("endpoint")


@dataclass
class _Pending:
    host_ifname: str
    netns_id: str
    delete: Callable[[], object]
    then: Callable[[], object]
    done: threading.Event = field(default_factory=threading.Event)


class LinkReaper:
    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, host_ifname: str, netns_id: str, delete: Callable[[], object],
               then: Callable[[], object]) -> None:
        """Run ``delete`` (the veth) and then ``then`` (address release) soon."""
        with self._cond:
            self._pending.append(_Pending(host_ifname, netns_id, delete, then))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cilium-py-reaper",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def wait_for(self, host_ifname: str, netns_id: str = "", timeout: float = 30.0) -> None:
        """Block until no delete is pending for this interface name or namespace."""
        with self._cond:
            waits = [p.done for p in self._pending
                     if p.host_ifname == host_ifname or (netns_id and p.netns_id == netns_id)]
        for done in waits:
            done.wait(timeout)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every pending delete has run; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    # Ends with the queue; the next submit starts a fresh thread.
                    self._thread = None
                    return
                item = self._pending[0]
            for step, what in ((item.delete, "deleting veth"), (item.then, "releasing")):
                try:
                    step()
                except Exception:  # noqa: BLE001 - the start-up sweep repairs leftovers
                    log.exception(f"{what} of a deleted endpoint failed",
                                  extra={"fields": {"host-interface": item.host_ifname}})
            with self._cond:
                self._pending.remove(item)
                item.done.set()
                self._cond.notify_all()
