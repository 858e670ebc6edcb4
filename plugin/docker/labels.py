"""Container labels -> endpoint labels: the watcher the *agent* runs for Docker.

libnetwork never tells a network driver which container an endpoint belongs to, let
alone its labels; dockerd does, through its own API. So the agent watches dockerd's
event stream (container ``start``, network ``connect``), inspects the container, and
sets ``container:<key>=<value>`` labels on each of its endpoints. An endpoint is found
from the container's ``NetworkSettings.Networks[*].EndpointID`` (the driver uses Docker's
endpoint id as the agent's), plus an optional ``endpoints_of_container`` lookup (the
agent's endpoints whose ``container-id`` matches).

Fail closed: the driver creates endpoints with ``reserved:init`` only, so until this
watcher has set their labels they carry the *init* identity. Whenever the stream
(re)connects, every running container is re-synced, so nothing learnt while the agent
or dockerd was down is missed.

The order in which the agent and dockerd start does not matter, nor does a dockerd
restart: the watcher waits for dockerd's socket to appear (a cheap ``stat`` a few times
a second while it is missing), connects, re-syncs, and when the stream ends (dockerd
stopped) waits again.

The class is usable in any process: ``set_labels`` is the only way it changes
anything (the agent passes its EndpointManager's method; ``cilium-py-docker
--watch-labels`` passes :meth:`.agent_api.HTTPAgentAPI.set_labels`, the same over the
REST API, for agents that do not run the watcher themselves).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import CiliumPyError, NotFound
from ..labels.label import LabelError, parse_label
from ..logs import get_logger

log = get_logger("docker.labels")

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
SOURCE = "container"

SetLabels = Callable[[str, list[str]], Any]
SetContainer = Callable[[str, str, str], Any]  # (endpoint id, container id, container name)
EndpointsOf = Callable[[str], Iterable[str]]


def container_labels(raw: dict[str, str] | None, source: str = SOURCE) -> list[str]:
    """Docker labels as sorted endpoint labels; ones the label grammar refuses are dropped."""
    out: list[str] = []
    for key, value in sorted((raw or {}).items()):
        text = f"{source}:{key}={value}" if value != "" else f"{source}:{key}"
        try:
            parse_label(text)
        except LabelError as exc:
            log.warning("container label ignored", extra={"fields": {
                "label": text, "reason": str(exc)}})
            continue
        out.append(text)
    return out


def endpoint_ids(inspect: dict[str, Any]) -> list[str]:
    """Docker endpoint ids of a container, one per network it is attached to."""
    networks = ((inspect.get("NetworkSettings") or {}).get("Networks") or {})
    return [n["EndpointID"] for n in networks.values() if n and n.get("EndpointID")]


class DockerLabelWatcher:
    """Follows dockerd and keeps endpoint labels equal to their container's labels.

    ``client_factory`` builds the low-level docker API client (``docker.APIClient``);
    tests hand in a fake. ``docker_socket`` is the file to wait for before connecting
    (by default the path of a ``unix://`` ``docker_url``).
    """

    def __init__(
        self,
        set_labels: SetLabels,
        *,
        set_container: SetContainer | None = None,
        endpoints_of_container: EndpointsOf | None = None,
        docker_url: str = DEFAULT_DOCKER_URL,
        client_factory: Callable[[], Any] | None = None,
        docker_socket: str | None = None,
        retry_seconds: float = 0.5,
        poll_seconds: float = 0.2,
        workers: int = 4,
    ) -> None:
        self._set_labels = set_labels
        self._set_container = set_container
        self._endpoints_of = endpoints_of_container
        self._factory = client_factory or (lambda: _api_client(docker_url))
        if docker_socket is None and client_factory is None and docker_url.startswith("unix://"):
            docker_socket = docker_url[len("unix://"):]
        self._socket = docker_socket  # waited for while missing; None: just connect
        self._retry = retry_seconds
        self._poll = poll_seconds
        self._workers = workers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._applied: dict[str, tuple[list[str], str, str]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()  # set after the first full re-sync

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="docker-labels")
        self._thread = threading.Thread(target=self._run, name="docker-label-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream is fine
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- the loop --------------------------------------------------------------------

    def _wait_for_socket(self) -> bool:
        """Until dockerd's unix socket exists (or the watcher stops); True if it does."""
        if self._socket is None or os.path.exists(self._socket):
            return True
        log.info("waiting for dockerd", extra={"fields": {"socket": self._socket}})
        while not self._stop.wait(self._poll):
            if os.path.exists(self._socket):
                return True
        return False

    def _run(self) -> None:
        quiet = False  # one warning per outage, not one per retry
        while not self._stop.is_set():
            if not self._wait_for_socket():
                break
            try:
                client = self._factory()
                # Subscribe first, then re-sync: an event during the re-sync is not lost.
                self._stream = client.events(
                    decode=True,
                    filters={"type": ["container", "network"], "event": ["start", "connect"]},
                )
                self.resync(client)
                self.synced.set()
                quiet = False
                log.info("following dockerd's events", extra={"fields": {
                    "socket": self._socket}})
                for event in self._stream:
                    if self._stop.is_set():
                        break
                    self._dispatch(client, event)
                if not self._stop.is_set():
                    log.info("dockerd closed the event stream; waiting for it")
            except Exception as exc:  # noqa: BLE001 - dockerd may come and go
                if self._stop.is_set():
                    break
                (log.debug if quiet else log.warning)(
                    "docker event stream lost; retrying", extra={"fields": {"error": str(exc)}})
                quiet = True
            finally:
                self._stream = None
            self._stop.wait(self._retry)

    def _dispatch(self, client: Any, event: dict[str, Any]) -> None:
        cid = container_of(event)
        if cid is None or self._pool is None:
            return
        self._pool.submit(self._sync_logged, client, cid, event.get("Type") == "network")

    def _sync_logged(self, client: Any, cid: str, wait_for_endpoint: bool) -> None:
        try:
            self.sync_container(client, cid, wait_for_endpoint=wait_for_endpoint)
        except Exception as exc:  # noqa: BLE001 - one container must not stop the others
            log.warning("label sync failed", extra={"fields": {
                "container": cid[:12], "error": str(exc)}})

    # -- syncing ---------------------------------------------------------------------

    def resync(self, client: Any) -> None:
        for summary in client.containers(filters={"status": "running"}):
            self._sync_logged(client, summary["Id"], False)

    def sync_container(self, client: Any, cid: str, wait_for_endpoint: bool = False,
                       attempts: int = 20, delay: float = 0.05) -> dict[str, list[str]]:
        """Set the labels of every endpoint of container ``cid``; returns what was set.

        After a network ``connect`` the new EndpointID may show in inspect a moment later,
        so that path retries briefly until every network has one.
        """
        info: dict[str, Any] = {}
        for _ in range(attempts if wait_for_endpoint else 1):
            info = client.inspect_container(cid)
            networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
            if not wait_for_endpoint or all(n and n.get("EndpointID") for n in networks.values()):
                break
            time.sleep(delay)
        labels = container_labels((info.get("Config") or {}).get("Labels"))
        container = (info.get("Id") or cid, (info.get("Name") or "").lstrip("/"))
        targets = list(endpoint_ids(info))
        if self._endpoints_of is not None:
            targets += [e for e in self._endpoints_of(info.get("Id") or cid) if e not in targets]
        done: dict[str, list[str]] = {}
        for ep_id in targets:
            with self._lock:
                if self._applied.get(ep_id) == (labels, *container):
                    continue
            try:
                self._set_labels(ep_id, list(labels))
                if self._set_container is not None:
                    # libnetwork never names the container to the driver: the endpoint
                    # gets its container id and name from here (metadata only).
                    self._set_container(ep_id, *container)
            except NotFound:
                continue  # an endpoint of another driver (bridge, host, ...)
            except CiliumPyError as exc:
                log.warning("setting labels failed", extra={"fields": {
                    "endpoint": ep_id, "container": cid[:12], "error": exc.message}})
                continue
            with self._lock:
                self._applied[ep_id] = (labels, *container)
            done[ep_id] = labels
            log.info("endpoint labels set", extra={"fields": {
                "endpoint": ep_id, "container": cid[:12], "labels": labels}})
        return done

    def forget(self, ep_id: str) -> None:
        """Drop the cache entry of a deleted endpoint (the agent may call this)."""
        with self._lock:
            self._applied.pop(ep_id, None)


def container_of(event: dict[str, Any]) -> str | None:
    """The container an event is about: the actor of a container event, the
    ``container`` attribute of a network event."""
    kind = event.get("Type")
    actor = event.get("Actor") or {}
    if kind == "container" and event.get("Action") == "start":
        return actor.get("ID") or event.get("id")
    if kind == "network" and event.get("Action") == "connect":
        return (actor.get("Attributes") or {}).get("container")
    return None


def _api_client(url: str) -> Any:
    import docker  # imported here: only processes that watch need the SDK loaded

    return docker.APIClient(base_url=url, timeout=30)
