"""The container label watcher, against a fake dockerd API client."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from cilium_py.docker.labels import (
    DockerLabelWatcher,
    container_labels,
    container_of,
    endpoint_ids,
)
from cilium_py.errors import NotFound, Unavailable

CID = "c" * 64
EP1, EP2 = "1" * 64, "2" * 64


def _inspect(labels: dict[str, str], endpoints: dict[str, str]) -> dict[str, Any]:
    return {"Id": CID, "Config": {"Labels": labels},
            "NetworkSettings": {"Networks": {net: {"EndpointID": ep}
                                             for net, ep in endpoints.items()}}}


class FakeStream:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.closed = threading.Event()

    def __iter__(self):
        while not self.closed.is_set():
            try:
                item = self.events.get(timeout=0.02)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.closed.set()


class FakeDocker:
    def __init__(self, containers: dict[str, dict[str, Any]]) -> None:
        self.containers_by_id = containers
        self.streams: list[FakeStream] = []
        self.inspects = 0

    def events(self, decode: bool, filters: dict[str, Any]) -> FakeStream:
        assert decode and filters["type"] == ["container", "network"]
        stream = FakeStream()
        self.streams.append(stream)
        return stream

    def containers(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"Id": cid} for cid in self.containers_by_id]

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.inspects += 1
        return self.containers_by_id[cid]


class Sink:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[tuple[str, list[str]]] = []
        self.event = threading.Event()

    def __call__(self, ep_id: str, labels: list[str]) -> None:
        if ep_id not in self.known:
            raise NotFound(f"endpoint {ep_id} not found")
        self.calls.append((ep_id, labels))
        self.event.set()


def test_container_labels_become_sorted_container_labels():
    assert container_labels({"app": "web", "tier": "", "a.b/c": "1"}) == [
        "container:a.b/c=1", "container:app=web", "container:tier"]
    assert container_labels(None) == []


def test_labels_the_grammar_refuses_are_dropped():
    assert container_labels({"bad;key": "x", "ok": "y"}) == ["container:ok=y"]


def test_endpoint_ids_skip_networks_without_one():
    info = _inspect({}, {"n1": EP1, "n2": ""})
    assert endpoint_ids(info) == [EP1]
    assert endpoint_ids({}) == []


def test_container_of_events():
    assert container_of({"Type": "container", "Action": "start", "Actor": {"ID": CID}}) == CID
    assert container_of({"Type": "network", "Action": "connect",
                         "Actor": {"ID": "net", "Attributes": {"container": CID}}}) == CID
    assert container_of({"Type": "container", "Action": "die", "Actor": {"ID": CID}}) is None


def test_sync_sets_labels_on_every_endpoint_it_owns():
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"cpy": EP1, "bridge": EP2})})
    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker)
    done = watcher.sync_container(docker, CID)
    # EP2 belongs to the bridge driver: NotFound is skipped silently.
    assert done == {EP1: ["container:app=web"]}
    assert sink.calls == [(EP1, ["container:app=web"])]


def test_sync_names_the_container_of_each_endpoint():
    """Issue 11 item 10: Docker endpoints showed empty container-id/container-name."""
    info = _inspect({"app": "web"}, {"cpy": EP1, "bridge": EP2})
    info["Name"] = "/web"
    docker = FakeDocker({CID: info})
    named: list[tuple[str, str, str]] = []
    watcher = DockerLabelWatcher(Sink({EP1}), client_factory=lambda: docker,
                                 set_container=lambda *args: named.append(args))
    watcher.sync_container(docker, CID)
    watcher.sync_container(docker, CID)
    assert named == [(EP1, CID, "web")]


def test_unchanged_labels_are_not_set_twice():
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"cpy": EP1})})
    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker)
    watcher.sync_container(docker, CID)
    watcher.sync_container(docker, CID)
    assert len(sink.calls) == 1
    watcher.forget(EP1)
    watcher.sync_container(docker, CID)
    assert len(sink.calls) == 2


def test_agent_lookup_adds_endpoints():
    docker = FakeDocker({CID: _inspect({"app": "web"}, {})})
    sink = Sink({EP2})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker,
                                 endpoints_of_container=lambda cid: [EP2] if cid == CID else [])
    assert watcher.sync_container(docker, CID) == {EP2: ["container:app=web"]}


def test_agent_errors_do_not_stop_the_sync():
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"a": EP1, "b": EP2})})
    calls: list[str] = []

    def flaky(ep_id: str, labels: list[str]) -> None:
        calls.append(ep_id)
        if ep_id == EP1:
            raise Unavailable("agent: regenerating")

    watcher = DockerLabelWatcher(flaky, client_factory=lambda: docker)
    assert list(watcher.sync_container(docker, CID)) == [EP2]
    assert calls == [EP1, EP2]
    # Not cached: the next sync tries EP1 again.
    watcher.sync_container(docker, CID)
    assert calls.count(EP1) == 2


def test_connect_waits_for_the_endpoint_id(monkeypatch):
    info = _inspect({"app": "web"}, {"cpy": ""})
    docker = FakeDocker({CID: info})
    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker)

    original = docker.inspect_container

    def later(cid: str) -> dict[str, Any]:
        if docker.inspects == 2:
            info["NetworkSettings"]["Networks"]["cpy"]["EndpointID"] = EP1
        return original(cid)

    monkeypatch.setattr(docker, "inspect_container", later)
    assert watcher.sync_container(docker, CID, wait_for_endpoint=True, delay=0.001) == {
        EP1: ["container:app=web"]}


@pytest.fixture
def running():
    made: list[DockerLabelWatcher] = []
    yield made
    for watcher in made:
        watcher.stop()


def test_start_resyncs_then_follows_events(running):
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"cpy": EP1})})
    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker, retry_seconds=0.01)
    running.append(watcher)
    watcher.start()
    assert watcher.synced.wait(2)
    assert sink.calls == [(EP1, ["container:app=web"])]

    docker.containers_by_id[CID]["Config"]["Labels"] = {"app": "db"}
    sink.event.clear()
    docker.streams[-1].events.put({"Type": "container", "Action": "start",
                                   "Actor": {"ID": CID}})
    assert sink.event.wait(2)
    assert sink.calls[-1] == (EP1, ["container:app=db"])


def test_lost_stream_reconnects_and_resyncs(running):
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"cpy": EP1})})
    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=lambda: docker, retry_seconds=0.01)
    running.append(watcher)
    watcher.start()
    assert watcher.synced.wait(2)
    docker.containers_by_id[CID]["Config"]["Labels"] = {"app": "db"}
    sink.event.clear()
    docker.streams[-1].events.put(ConnectionError("dockerd restarted"))
    assert sink.event.wait(2)
    assert len(docker.streams) >= 2
    assert sink.calls[-1] == (EP1, ["container:app=db"])


def test_stop_ends_the_thread(running):
    docker = FakeDocker({})
    watcher = DockerLabelWatcher(Sink(set()), client_factory=lambda: docker)
    watcher.start()
    assert watcher.synced.wait(2)
    watcher.stop(timeout=2)
    assert docker.streams[-1].closed.is_set()
    assert watcher._thread is None


def test_waits_for_dockerd_to_appear_and_for_it_to_come_back(running, tmp_path):
    """Issue 11 item 4: the agent may start before dockerd, and dockerd may restart."""
    sock = tmp_path / "docker.sock"
    docker = FakeDocker({CID: _inspect({"app": "web"}, {"cpy": EP1})})
    connects: list[int] = []

    def factory() -> FakeDocker:
        if not sock.exists():
            raise ConnectionError("no dockerd")
        connects.append(1)
        return docker

    sink = Sink({EP1})
    watcher = DockerLabelWatcher(sink, client_factory=factory, docker_socket=str(sock),
                                 retry_seconds=0.01, poll_seconds=0.01)
    running.append(watcher)
    watcher.start()
    assert not watcher.synced.wait(0.2) and connects == []  # no dockerd: just waiting
    sock.touch()
    assert watcher.synced.wait(2)
    assert sink.calls == [(EP1, ["container:app=web"])]

    # dockerd stops (its stream ends, its socket goes) and comes back with a container
    # that started while the watcher was away: the re-sync labels it.
    sock.unlink()
    docker.streams[-1].close()
    docker.containers_by_id[CID] = _inspect({"app": "db"}, {"cpy": EP2})
    sink.known.add(EP2)
    sink.event.clear()
    sock.touch()
    assert sink.event.wait(2)
    assert sink.calls[-1] == (EP2, ["container:app=db"])
    assert len(connects) == 2
