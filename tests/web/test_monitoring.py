"""/healthz, /metrics, /api/v1/openapi.json, and JSON errors for werkzeug's own answers."""

from __future__ import annotations

import dataclasses
import re

import pytest

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


def test_metrics_ask_for_their_own_token_when_one_is_set(settings, db):
    client = create_app({"SETTINGS": dataclasses.replace(settings, metrics_token="scrape-me"),
                         "TESTING": True}).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and "GENQ_METRICS_TOKEN" in refused.json["message"], headers
        assert "genq_jobs" not in refused.text
    answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert answer.status_code == 200 and "genq_database_up 1.0" in answer.text
    assert client.get("/healthz").status_code == 200  # still open: load balancers probe it


def test_openapi_describes_every_api_route(client, app):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.rule in ("/healthz", "/metrics"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (path, method) in documented, (path, method)
    body = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobRequest"}
    train = spec["components"]["schemas"]["TrainJobRequest"]
    assert train["properties"]["model"]["enum"] == ["gpt", "gru", "hf-causal-lm", "dcgan", "vae", "wavenet"]
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


def test_prometheus_ops_series_from_the_rows(client, db):
    from datetime import timedelta

    from prometheus_client.parser import text_string_to_metric_families

    from genq.db.models import Worker, utcnow

    now = utcnow()
    for _ in range(2):
        add_job(db, status="queued")
    add_job(db, team="beta", status="queued", pool="big")
    add_job(db, status="running")
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    add_job(db, status="succeeded", started_at=ago(700), finished_at=ago(600))  # ran 100 s
    add_job(db, status="failed", started_at=ago(5300), finished_at=ago(300))  # ran 5000 s
    add_job(db, status="succeeded", started_at=ago(8000), finished_at=ago(7300))  # finished over an hour ago
    add_job(db, status="cancelled", finished_at=ago(60))  # never started: no run time
    gpu = {"kind": "cuda", "name": "H100", "visible_id": "1", "utilization": 0.5, "memory_used_bytes": 2**30}
    cpu = {"kind": "cpu", "name": "x86_64", "memory_bytes": 2**34}
    with db.session() as s:
        s.add(Worker(id="gpu-w", hostname="a", pool="big", devices=[gpu], last_heartbeat=ago(7)))
        s.add(Worker(id="cpu-w", hostname="b", devices=[cpu], last_heartbeat=ago(1)))
        s.add(Worker(id="gone", hostname="c", devices=[gpu], status="stopped", last_heartbeat=ago(3600)))

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def samples(name: str) -> dict:
        family = families[name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")]
        return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}

    assert samples("genq_queue_depth") == {(("pool", "default"), ("team", "alpha")): 2,
                                           (("pool", "big"), ("team", "beta")): 1}
    count = samples("genq_job_duration_seconds_count")
    assert count == {(("status", "failed"), ("type", "train")): 1, (("status", "succeeded"), ("type", "train")): 1}
    assert samples("genq_job_duration_seconds_sum")[(("status", "succeeded"), ("type", "train"))] == \
        pytest.approx(100, abs=1)
    buckets = samples("genq_job_duration_seconds_bucket")
    assert buckets[(("le", "60"), ("status", "succeeded"), ("type", "train"))] == 0
    assert buckets[(("le", "300"), ("status", "succeeded"), ("type", "train"))] == 1
    assert buckets[(("le", "3600"), ("status", "failed"), ("type", "train"))] == 0
    assert buckets[(("le", "7200"), ("status", "failed"), ("type", "train"))] == 1
    age = samples("genq_worker_heartbeat_age_seconds")
    assert set(age) == {(("pool", "big"), ("status", "online"), ("worker", "gpu-w")),
                        (("pool", "default"), ("status", "online"), ("worker", "cpu-w"))}
    assert age[(("pool", "big"), ("status", "online"), ("worker", "gpu-w"))] == pytest.approx(7, abs=2)
    device = (("device", "1"), ("name", "H100"), ("worker", "gpu-w"))
    assert samples("genq_device_utilization_ratio") == {device: 0.5}  # the CPU worker reports none
    assert samples("genq_device_memory_used_bytes") == {device: 2**30}
