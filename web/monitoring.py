"""/healthz (no auth) and /metrics (Prometheus text): job/worker gauges read when scraped, request counts."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from genq.db import Database
from genq.db.models import JOB_STATUSES, Worker
from genq.web import queries

bp = Blueprint("monitoring", __name__)
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them


class _DatabaseCollector:
    """Gauges computed from the rows when Prometheus scrapes."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self):
        jobs = GaugeMetricFamily("genq_jobs", "Jobs by status", labels=["status"])
        workers = GaugeMetricFamily("genq_workers_online", "Workers whose status is online")
        up = GaugeMetricFamily("genq_database_up", "1 if the database answered this scrape")
        try:
            with self.db.session() as s:
                counts = queries.job_counts(s)
                online = (
                    s.scalar(select(func.count()).select_from(Worker).where(Worker.status == "online")) or 0
                )
        except SQLAlchemyError:  # a scrape during an outage reports the outage instead of failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        workers.add_metric([], online)
        yield jobs
        yield workers


class Telemetry:
    """One Prometheus registry per app (tests build many apps in one process)."""

    def __init__(self, db: Database):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "genq_http_requests",
            "HTTP requests answered",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))

    def count(self, req, response) -> None:
        # The route pattern, not the path, keeps the label set small.
        endpoint = req.url_rule.rule if req.url_rule else "unmatched"
        self.requests.labels(req.method, endpoint, str(response.status_code)).inc()


@bp.get("/healthz")
def healthz():
    """200 {"status": "ok"} when the database answers, else 503."""
    from genq.web import state

    try:
        with state().db.session() as s:
            s.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:  # any driver error means "not healthy", not a crash
        return jsonify(
            {
                "status": "unavailable",
                "error": "database_unavailable",
                "message": f"the database does not answer: {type(exc).__name__}",
            }
        ), 503
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics():
    """Prometheus text exposition."""
    from genq.web import state

    return Response(generate_latest(state().telemetry.registry), content_type=CONTENT_TYPE_LATEST)
