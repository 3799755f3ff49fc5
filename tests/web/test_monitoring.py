"""/healthz, /metrics, /api/v1/openapi.json, and JSON errors for werkzeug's own answers."""

from __future__ import annotations

import dataclasses

from genq.web import create_app
from tests.web.conftest import add_job


def test_healthz_reports_a_dead_database(settings, tmp_path):
    broken = dataclasses.replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    client = create_app({"SETTINGS": broken}).test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json["status"] == "unavailable"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "genq_database_up 0.0" in metrics.text


def test_prometheus_metrics(client, auth, db):
    add_job(db, status="queued")
    add_job(db, status="running")
    add_job(db, status="running")
    client.get("/api/v1/jobs", headers=auth)
    text = client.get("/metrics").text
    assert 'genq_jobs{status="running"} 2.0' in text and 'genq_jobs{status="queued"} 1.0' in text
    assert "genq_workers_online 0.0" in text and "genq_database_up 1.0" in text
    assert "_created" not in text
    assert 'genq_http_requests_total{endpoint="/api/v1/jobs",method="GET",status="200"} 1.0' in text


def test_openapi_describes_every_api_route(client, app):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.rule in ("/healthz", "/metrics"):
            path = rule.rule.replace("<id:", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (path, method) in documented, (path, method)
    body = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobRequest"}
    train = spec["components"]["schemas"]["TrainJobRequest"]
    assert train["properties"]["model"]["enum"] == ["gpt", "gru", "dcgan", "vae", "wavenet"]
    assert train["additionalProperties"] is False


def test_errors_are_json_on_api_paths_and_pages_elsewhere(client, auth):
    assert client.get("/api/v1/missing", headers=auth).json["error"] == "not_found"
    page = client.get("/jobs/12345", headers=auth)
    assert page.status_code == 404 and page.mimetype == "text/html" and "job 12345 not found" in page.text
    assert client.get("/no/such/page", headers=auth).status_code == 404


def test_security_headers(client):
    answer = client.get("/login")
    assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
