"""Bad input answers 4xx in the API's JSON error form, never 5xx (issue 11 items 2, 20-23)."""

from __future__ import annotations

import json

import pytest


def check(resp, status: int, field: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    doc = resp.get_json()
    assert set(doc) == {"error", "fields"} and doc["error"]
    if field is not None:
        assert field in doc["fields"], doc
    return doc


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "abc", "-inf", "1e999"])
def test_policy_wait_takes_only_finite_nonnegative_timeouts(client, value: str) -> None:
    check(client.get(f"/v1/policy/wait/1?timeout={value}"), 400, "timeout")


def test_policy_wait_with_a_good_timeout_still_works(client) -> None:
    assert client.get("/v1/policy/wait/1?timeout=0").status_code == 200
    assert client.get("/v1/policy/wait/99?timeout=0.01").status_code == 504


def test_deeply_nested_json_is_a_400(client) -> None:
    check(client.put("/v1/policy", data="[" * 100_000 + "]" * 100_000), 400, "body")


def test_a_port_as_a_huge_integer_is_a_400(client) -> None:
    port = "9" * 5000
    doc = ('[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": '
           + port + '}]}]}]}]')
    check(client.put("/v1/policy", data=doc), 400, "body")
    doc = doc.replace(port, "9" * 40)
    check(client.put("/v1/policy", data=doc), 400)


@pytest.mark.parametrize("body", ["[1, 2]", '"x"', "42", "null"])
def test_delete_policy_with_a_non_object_body_is_a_400(client, body: str) -> None:
    check(client.delete("/v1/policy", data=body), 400)


@pytest.mark.parametrize("ep_id", [".", "..", "abc%0A", "a%20b", "x" * 129])
def test_endpoint_ids_are_full_matched_and_dot_segments_refused(client, ep_id: str) -> None:
    check(client.put(f"/v1/endpoint/{ep_id}", json={"netns": "/var/run/netns/x"}), 400, "id")


@pytest.mark.parametrize("body,field", [
    ({"netns": "/x", "docker": "yes"}, "docker"),
    ({"netns": "/x", "docker": 1}, "docker"),
    ({"netns": "/x", "labels": "app=web"}, "labels"),
    ({"netns": "/x", "labels": [1]}, "labels.0"),
])
def test_types_are_strict(client, body: dict, field: str) -> None:
    check(client.put("/v1/endpoint/abc", json=body), 400, field)


def test_patch_labels_takes_a_list(client) -> None:
    check(client.patch("/v1/endpoint/abc/labels", json={"labels": "app=web"}), 400, "labels")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_bodies_are_utf8_only(client, encoding: str) -> None:
    raw = json.dumps({"netns": "/var/run/netns/x"}).encode(encoding)
    check(client.put("/v1/endpoint/abc", data=raw), 400, "body")


def test_bodies_are_capped_and_the_error_says_the_limit(client, api_agent) -> None:
    doc = check(client.put("/v1/policy", data=b"[" + b" " * (9 * 1024 * 1024) + b"]"), 413,
                "body")
    assert "8 MiB" in doc["error"]
    big = [{"endpointSelector": {}, "description": "x" * (100 * 1024)}]
    check(client.put("/v1/policy", json=big), 400)
    assert len(api_agent.policy.repo) == 0


def test_endpoints_cannot_attach_without_the_datapath(client) -> None:
    # An agent that never took over the node must not plumb anything (unenforced).
    check(client.put("/v1/endpoint/abc", json={"docker": True}), 503)
