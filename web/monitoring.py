"""/healthz (no auth) and /metrics (Prometheus text): job, queue, worker and device series read from the rows
when scraped, this process' event streams, request counts."""

from __future__ import annotations

import hmac
from datetime import timedelta

from flask import Blueprint, Response, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from genq.db import Database
from genq.db.models import JOB_STATUSES, Job, Team, Worker, utcnow
from genq.errors import Unauthorized
from genq.web import queries
from genq.web.auth import bearer_token

bp = Blueprint("monitoring", __name__)
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
DURATION_WINDOW = timedelta(hours=1)
DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)  # seconds
WORKER_HORIZON = timedelta(days=1)  # a worker silent longer than this is history, not an alert


class _DatabaseCollector:
    """Gauges computed from the rows when Prometheus scrapes."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self):
        jobs = GaugeMetricFamily("genq_jobs", "Jobs by status", labels=["status"])
        workers = GaugeMetricFamily("genq_workers_online", "Workers whose status is online")
        up = GaugeMetricFamily("genq_database_up", "1 if the database answered this scrape")
        now = utcnow()
        try:
            with self.db.session() as s:
                counts = queries.job_counts(s)
                online = (
                    s.scalar(select(func.count()).select_from(Worker).where(Worker.status == "online")) or 0
                )
                queued = s.execute(select(Job.pool, Team.name, func.count()).join(Team, Job.team_id == Team.id)
                                   .where(Job.status == "queued").group_by(Job.pool, Team.name)).all()
                finished = s.execute(select(Job.type, Job.status, Job.started_at, Job.finished_at).where(
                    Job.finished_at >= now - DURATION_WINDOW, Job.started_at.is_not(None))).all()
                live_workers = s.scalars(select(Worker).where(
                    Worker.status != "stopped", Worker.last_heartbeat >= now - WORKER_HORIZON)).all()
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
        depth = GaugeMetricFamily("genq_queue_depth", "Queued jobs by pool and team", labels=["pool", "team"])
        for pool, team, n in queued:
            depth.add_metric([pool, team], n)
        yield depth
        yield _durations(finished)
        yield from _worker_series(live_workers, now)


def _durations(rows) -> HistogramMetricFamily:
    """Run times (started to finished) of the jobs that finished within DURATION_WINDOW, by type and status."""
    family = HistogramMetricFamily(
        "genq_job_duration_seconds",
        "Run time of jobs that finished in the last hour, by type and status: a sliding window read from the rows "
        "at each scrape, so use it as it is (histogram_quantile over the buckets), not through rate()",
        labels=["type", "status"])
    groups: dict[tuple[str, str], list[float]] = {}
    for kind, status, started, finished in rows:
        groups.setdefault((kind, status), []).append(max(0.0, (finished - started).total_seconds()))
    for labels, seconds in sorted(groups.items()):
        buckets = [(str(b), sum(s <= b for s in seconds)) for b in DURATION_BUCKETS]
        family.add_metric(list(labels), buckets + [("+Inf", len(seconds))], sum(seconds))
    return family


def _worker_series(rows: list[Worker], now):
    """Heartbeat age per worker, and utilisation and memory in use per device where its heartbeat reports them
    (GPU workers with NVML; a CPU worker reports none)."""
    age = GaugeMetricFamily("genq_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat",
                            labels=["worker", "pool", "status"])
    busy = GaugeMetricFamily("genq_device_utilization_ratio", "Device utilisation (0..1) at the last heartbeat",
                             labels=["worker", "device", "name"])
    memory = GaugeMetricFamily("genq_device_memory_used_bytes", "Device memory in use at the last heartbeat",
                               labels=["worker", "device", "name"])
    for w in rows:
        age.add_metric([w.id, w.pool, w.status], max(0.0, (now - w.last_heartbeat).total_seconds()))
        for index, device in enumerate(w.devices or []):
            if "utilization" in device:
                labels = [w.id, str(device.get("visible_id", index)), str(device.get("name", ""))]
                busy.add_metric(labels, device["utilization"])
                memory.add_metric(labels, device.get("memory_used_bytes", 0))
    return age, busy, memory


class _StreamCollector:
    """This process' live event streams (each gunicorn process has its own limit)."""

    def __init__(self, relay):
        self.relay = relay

    def collect(self):
        yield GaugeMetricFamily("genq_event_streams_open", "Event streams open in this web process",
                                value=self.relay.open_streams)
        yield GaugeMetricFamily("genq_event_streams_limit", "Event streams this web process holds at most",
                                value=self.relay.limit)
        yield CounterMetricFamily("genq_event_streams_refused", "Event streams refused (503) for want of a slot",
                                  value=self.relay.refused)


class Telemetry:
    """One Prometheus registry per app (tests build many apps in one process)."""

    def __init__(self, db: Database, relay):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "genq_http_requests",
            "HTTP requests answered",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))
        self.registry.register(_StreamCollector(relay))

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
    """Prometheus text exposition; with GENQ_METRICS_TOKEN set, only for 'Authorization: Bearer' that token (the
    series name every team and its queue: a scraper's secret, not an API token, which would be a team's)."""
    from genq.web import state

    if (secret := state().settings.metrics_token) and not hmac.compare_digest(
            (bearer_token(request.headers.get("Authorization", "")) or "").encode(), secret.encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer TOKEN' with the token in GENQ_METRICS_TOKEN")
    return Response(generate_latest(state().telemetry.registry), content_type=CONTENT_TYPE_LATEST)
