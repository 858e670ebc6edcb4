"""The rule repository: append, revision, delete by labels, filter, serialize."""

import pytest

from cilium_py.labels import LabelSet
from cilium_py.policy import PolicyValidationError, Repository, parse_policy


def doc(name: str, app: str = "web", **extra: str) -> dict:
    labels = [{"key": "name", "value": name}] + [
        {"key": k, "value": v, "source": "k8s"} for k, v in extra.items()
    ]
    return {
        "labels": labels,
        "endpointSelector": {"matchLabels": {"app": app}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
    }


def query(*items: str) -> LabelSet:
    return LabelSet.parse(items, selector=True)


def test_revision_increases_on_every_import() -> None:
    repo = Repository()
    assert repo.revision == 1 and len(repo) == 0
    assert repo.add_json([doc("a")]) == 2
    assert repo.add(parse_policy([doc("b")])) == 3
    assert repo.revision == 3 and len(repo) == 2
    assert Repository(revision=41).add([]) == 42


def test_import_appends_even_with_equal_labels() -> None:
    repo = Repository()
    repo.add_json([doc("a")])
    repo.add_json([doc("a", app="db")])
    assert [r.endpoint_selector.to_dict() for r in repo.rules] == [
        {"matchLabels": {"app": "web"}},
        {"matchLabels": {"app": "db"}},
    ]


def test_invalid_document_changes_nothing() -> None:
    repo = Repository()
    repo.add_json([doc("a")])
    before = (repo.rules, repo.revision)
    with pytest.raises(PolicyValidationError):
        repo.add_json([doc("b"), {"endpointSelector": {}, "ingress": [{"fromEntities": ["x"]}]}])
    assert (repo.rules, repo.revision) == before


def test_delete_by_labels_removes_rules_containing_all_of_them() -> None:
    repo = Repository()
    repo.add_json([doc("a", team="x"), doc("b", team="x"), doc("c", team="y")])
    rev = repo.revision
    result = repo.delete(query("k8s:team=x", "name=b"))
    assert (result.deleted, result.revision) == (1, rev + 1)
    assert [r.labels.strings()[1] for r in repo.rules] == ["unspec:name=a", "unspec:name=c"]
    # A bare label matches any source; a prefixed one only its own.
    assert repo.delete(query("unspec:team=x")).deleted == 0
    assert repo.delete(query("team=x")).deleted == 1
    assert [r.labels.strings()[1] for r in repo.rules] == ["unspec:name=c"]


def test_delete_without_match_keeps_revision() -> None:
    repo = Repository()
    repo.add_json([doc("a")])
    rev = repo.revision
    result = repo.delete(query("name=zzz"))
    assert (result.deleted, result.revision) == (0, rev)


def test_delete_all() -> None:
    repo = Repository()
    repo.add_json([doc("a"), doc("b")])
    result = repo.delete_all()
    assert result.deleted == 2 and len(repo) == 0
    assert repo.delete(()).deleted == 0


def test_search_and_serialize() -> None:
    repo = Repository()
    document = [doc("a", team="x"), doc("b", team="y")]
    repo.add_json(document)
    assert [i for i, _ in repo.search(query("team=y"))] == [1]
    assert len(repo.search()) == 2
    out = repo.to_json(query("team=x"))
    assert len(out) == 1
    assert parse_policy(out) == [repo.rules[0]]
    assert parse_policy(repo.to_json()) == list(repo.rules)


def test_snapshot_and_replace() -> None:
    repo = Repository()
    repo.add_json([doc("a")])
    rules, rev = repo.snapshot()
    repo.add_json([doc("b")])
    assert len(rules) == 1 and rev == 2
    assert repo.replace_all(rules) == 4 and repo.rules == rules
