"""Policy in the store: one key per rule, so an import writes only the rules it adds."""

from __future__ import annotations

import json
from pathlib import Path

from cilium_py.agent.agent import Agent
from cilium_py.agent.policy_manager import RULE_PREFIX, RULES_KEY
from cilium_py.config import AgentConfig


def _agent(path: Path) -> Agent:
    return Agent(AgentConfig(state_dir=str(path), socket=str(path / "s.sock")))


def _rule(name: str, port: int) -> dict:
    return {"endpointSelector": {"matchLabels": {"app": name}},
            "labels": [f"name={name}"],
            "ingress": [{"toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}]}


class _CountingPuts:
    """Wraps the agent's store to record the bytes of every write."""

    def __init__(self, store) -> None:
        self.store = store
        self.written: list[tuple[str, int]] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def put(self, key: str, value: bytes) -> int:
        self.written.append((key, len(value)))
        return self.store.put(key, value)

    def create(self, key: str, value: bytes) -> bool:
        self.written.append((key, len(value)))
        return self.store.create(key, value)


def test_an_import_writes_only_its_own_rules(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        big = "x" * 10_000
        first = _rule("a", 80)
        first["description"] = big
        agent.policy.import_rules([first])
        counting = _CountingPuts(agent.policy.store)
        agent.policy.store = counting
        agent.policy.import_rules([_rule("b", 81)])
        # The earlier 10 kB rule is not written again.
        assert sum(size for _, size in counting.written) < 2_000, counting.written
    finally:
        agent.shutdown()


def test_rules_survive_restart_in_order_and_deletes_remove_keys(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        for i, name in enumerate(["a", "b", "c", "d"]):
            agent.policy.import_rules([_rule(name, 80 + i)])
        agent.policy.delete(["name=b"])
        revision = agent.policy.repo.revision
        keys = [kv.key for kv in agent.store.list(RULE_PREFIX)]
        assert len(keys) == 3
    finally:
        agent.shutdown()
    again = _agent(tmp_path)
    try:
        again.policy.load()  # what start_node does, without the kernel
        doc = again.policy.get()
        assert [r["labels"][0]["key"] for r in doc["policy"]] == ["name"] * 3
        assert [r["endpointSelector"]["matchLabels"] for r in doc["policy"]] == [
            {"app": "a"}, {"app": "c"}, {"app": "d"}]
        assert doc["revision"] == revision
    finally:
        again.shutdown()


def test_a_whole_list_key_from_an_older_version_is_migrated(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        agent.store.put(RULES_KEY, json.dumps([_rule("old1", 80), _rule("old2", 81)]).encode())
        agent.store.put("cilium-py/policy/revision", b"7")
    finally:
        agent.shutdown()
    again = _agent(tmp_path)
    try:
        again.policy.load()  # what start_node does, without the kernel
        assert again.policy.repo.revision == 7
        assert len(again.policy.get()["policy"]) == 2
        assert again.store.get(RULES_KEY) is None
        assert len(again.store.list(RULE_PREFIX)) == 2
        again.policy.delete(["name=old1"])
        assert len(again.store.list(RULE_PREFIX)) == 1
    finally:
        again.shutdown()
