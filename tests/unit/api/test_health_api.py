"""The foundation routes and the API's error form."""

from __future__ import annotations

from flask import Blueprint

from cilium_py.api.app import create_app
from cilium_py.api.body import load
from cilium_py.api.schemas import ConfigSchema, HealthSchema


def test_healthz_reports_each_subsystem(client) -> None:
    resp = client.get("/v1/healthz")
    doc = resp.get_json()
    assert resp.status_code in (200, 503)
    assert HealthSchema().validate(doc) == {}
    assert doc["subsystems"]["store"]["status"] == "ok"
    assert "datapath-prerequisites" in doc["subsystems"]


def test_config_answers_effective_settings(client, api_agent) -> None:
    doc = client.get("/v1/config").get_json()
    assert ConfigSchema().validate(doc) == {}
    assert doc["state-dir"] == api_agent.config.state_dir
    assert doc["socket"] == api_agent.config.socket


def test_unknown_route_is_json_404(client) -> None:
    resp = client.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.is_json and "error" in resp.get_json()
    resp = client.get("/not-even-v1")
    assert resp.status_code == 404 and resp.is_json


def test_wrong_method_is_json_405(client) -> None:
    resp = client.post("/v1/healthz")
    assert resp.status_code == 405 and resp.is_json


def _app_with_echo(api_agent):
    from marshmallow import Schema, fields

    class EchoSchema(Schema):
        name = fields.String(required=True)
        count = fields.Integer()

    bp = Blueprint("echo", __name__)

    @bp.put("/v1/test-echo")
    def echo():
        return load(EchoSchema())

    @bp.get("/v1/test-crash")
    def crash():
        raise RuntimeError("secret detail")

    app = create_app(api_agent)
    app.register_blueprint(bp)
    return app.test_client()


def test_malformed_json_is_400(api_agent) -> None:
    c = _app_with_echo(api_agent)
    resp = c.put("/v1/test-echo", data=b"{nope")
    assert resp.status_code == 400
    doc = resp.get_json()
    assert "malformed JSON" in doc["error"] and "body" in doc["fields"]


def test_schema_failure_names_the_field(api_agent) -> None:
    c = _app_with_echo(api_agent)
    resp = c.put("/v1/test-echo", data=b'{"count": "x"}')
    assert resp.status_code == 400
    fields = resp.get_json()["fields"]
    assert set(fields) == {"name", "count"}
    ok = c.put("/v1/test-echo", data=b'{"name": "a", "count": 2}')
    assert ok.status_code == 200 and ok.get_json() == {"name": "a", "count": 2}


def test_unexpected_error_hides_trace(api_agent) -> None:
    c = _app_with_echo(api_agent)
    resp = c.get("/v1/test-crash")
    assert resp.status_code == 500
    assert "secret detail" not in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)
