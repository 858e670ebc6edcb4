"""/v1/service in the API's own error form (issue 15); balancing itself is in
tests/kernel/test_lb.py, with a real datapath."""

from __future__ import annotations

GOOD = {"frontend-address": {"ip": "10.96.0.1", "port": 80},
        "backend-addresses": [{"ip": "10.200.0.5", "port": 8080}]}


def test_bad_body_is_400_naming_the_field(client) -> None:
    resp = client.put("/v1/service/1", json={"frontend-address": {"ip": "10.96.0.1",
                                                                  "port": 70000}})
    assert resp.status_code == 400
    assert "frontend-address.port" in resp.get_json()["fields"]


def test_bad_id_is_400(client) -> None:
    for bad in ("0", "abc", "65536", "-1"):
        resp = client.put(f"/v1/service/{bad}", json=GOOD)
        assert resp.status_code == 400 and "id" in resp.get_json()["fields"], bad


def test_without_datapath_nothing_is_stored(client) -> None:
    resp = client.put("/v1/service/1", json=GOOD)
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert client.get("/v1/service").get_json() == []
    assert client.get("/v1/service/1").status_code == 404
    assert client.delete("/v1/service/1").status_code == 404
