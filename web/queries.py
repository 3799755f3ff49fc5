"""Read-side queries shared by the API and the dashboard: metrics, outputs, artifacts, logs, workers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from genq import metrics
from genq.db.models import Artifact, Job, JobLog, Metric, Output, Worker, WorkerHost, iso

LOSS_SERIES = ("train/loss", "val/loss")


def download_url(artifact_id: int) -> str:
    """Where an artifact is downloaded from."""
    return f"/api/v1/artifacts/{artifact_id}/download"


def downsample(points: list[list[Any]], max_points: int | None) -> list[list[Any]]:
    """At most `max_points` evenly spaced points, always keeping the first and the last."""
    n = len(points)
    if max_points is None or n <= max_points:
        return points
    if max_points == 1:
        return [points[-1]]
    picks = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in picks]


def metric_series(
    session: Session,
    job_id: int,
    max_points: int | None = None,
    names: tuple[str, ...] | None = None,
    start: int = 0,
    end: int = metrics.MAX_STEP,
) -> dict[str, list[list[Any]]]:
    """{name: [[step, value], ...]} by step, every point within steps start..end (or `max_points` evenly
    spaced ones); a step logged twice (after a resume) keeps its latest value."""
    query = select(Metric.name, Metric.step, Metric.value).where(
        Metric.job_id == job_id, Metric.step.between(start, end)
    )
    if names:
        query = query.where(Metric.name.in_(names))
    latest: dict[str, dict[int, float]] = {}
    for name, step, value in session.execute(query.order_by(Metric.name, Metric.step, Metric.id)):
        latest.setdefault(name, {})[step] = value
    return {
        name: downsample([[step, metrics.finite(v)] for step, v in sorted(steps.items())], max_points)
        for name, steps in latest.items()
    }


def bucketed_series(
    session: Session, job_id: int, names: tuple[str, ...] | None, start: int, end: int, points: int
) -> dict[str, dict[str, Any]]:
    """Each series (`names`, else all) within steps start..end as at most `points` buckets, computed in SQL:
    {"series": {name: [[step, last]]}, "bands": {name: [[step, min, max]]}, "bucket": {name: steps}}."""
    if names is None:
        names = tuple(metrics.series_names(session, [job_id]).get(job_id, []))
    out: dict[str, dict[str, Any]] = {"series": {}, "bands": {}, "bucket": {}}
    for name in names:
        found = metrics.downsample(session, job_id, name, start, end, points)
        if found.points:
            out["series"][name], out["bands"][name], out["bucket"][name] = found.points, found.bands, found.bucket
    return out


def latest_metrics(session: Session, job_id: int) -> list[tuple[str, int, float | None]]:
    """(name, step, value) of the last point of every series: the metrics table (the final val/loss included)."""
    latest = metrics.latest_points(session, [job_id]).get(job_id, {})
    return [(name, step, value) for name, (step, value) in sorted(latest.items())]


def artifact_to_dict(a: Artifact) -> dict[str, Any]:
    """The JSON form of an artifact."""
    return {
        "id": a.id,
        "job_id": a.job_id,
        "kind": a.kind,
        "name": a.name,
        "size_bytes": a.size_bytes,
        "media_type": a.media_type,
        "created_at": iso(a.created_at),
        "url": download_url(a.id),
    }


def job_artifacts(session: Session, job_id: int) -> list[dict[str, Any]]:
    """The job's artifacts, oldest first."""
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id))
    return [artifact_to_dict(a) for a in rows]


def output_to_dict(out: Output, media_type: str | None) -> dict[str, Any]:
    """The JSON form of an output: text inline, images and audio by download URL."""
    item: dict[str, Any] = {"id": out.id, "index": out.index, "prompt": out.prompt, "kind": out.kind,
                            "row": out.row, "row_id": out.row_id, "status": out.status, "error": out.error}
    if out.artifact_id is not None:
        item.update(url=download_url(out.artifact_id), media_type=media_type)
    if out.text is not None or out.artifact_id is None:
        item["text"] = out.text or ""
    return item


def _outputs_with_media_type():
    return select(Output, Artifact.media_type).outerjoin(Artifact, Output.artifact_id == Artifact.id)


def job_outputs(
    session: Session, job_id: int, step: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The job's final outputs (or, with `step`, the gallery drawn at that training step) by index; the first
    `limit` of them."""
    at_step = Output.step.is_(None) if step is None else Output.step == step
    rows = session.execute(_outputs_with_media_type().where(Output.job_id == job_id, at_step)
                           .order_by(Output.index, Output.id).limit(limit))
    return [output_to_dict(out, media_type) for out, media_type in rows]


def output_rows_page(session: Session, job_id: int, after: int | None, limit: int,
                     ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a job's outputs by input row: those of the first `limit` rows after row `after`, and the row to
    pass as `after` for the next page (None: no more rows stored). Outputs without a row (a training job's final
    samples) are rows of their own, numbered by their index."""
    row = func.coalesce(Output.row, Output.index)
    final = (Output.job_id == job_id, Output.step.is_(None))
    rows = list(session.scalars(select(row).where(*final, *(() if after is None else (row > after,)))
                                .distinct().order_by(row).limit(limit + 1)))
    if not rows:
        return [], None
    page = rows[:limit]
    found = session.execute(_outputs_with_media_type().where(*final, row >= page[0], row <= page[-1])
                            .order_by(row, Output.index))
    return [output_to_dict(out, media_type) for out, media_type in found], page[-1] if len(rows) > limit else None


def outputs_stored_after(session: Session, job_id: int, after_id: int, limit: int,
                         ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a generation job's outputs in the order they were stored (a running job stores its rows as
    they finish, not in input order): those after output `after_id`, and the id to pass next: the page's last,
    or `after_id` again when nothing more is stored yet (a page short of `limit` holds all there is now). One
    worker writes a job's rows, in id order."""
    found = session.execute(_outputs_with_media_type().where(
        Output.job_id == job_id, Output.step.is_(None), Output.id > after_id).order_by(Output.id).limit(limit))
    page = [output_to_dict(out, media_type) for out, media_type in found]
    return page, page[-1]["id"] if page else after_id


def outputs_by_id(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    """{output id: its JSON form} for `ids` (the caller checked they are the team's)."""
    rows = session.execute(_outputs_with_media_type().where(Output.id.in_(ids)))
    return {out.id: output_to_dict(out, media_type) for out, media_type in rows}


def sample_steps(session: Session, job_id: int) -> list[int]:
    """The training steps that have gallery samples, in order."""
    query = select(Output.step).where(Output.job_id == job_id, Output.step.is_not(None)).distinct()
    return list(session.scalars(query.order_by(Output.step)))


def job_logs(
    session: Session, job_id: int, after: int | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Log lines of a job with id > `after`, oldest first."""
    query = select(JobLog).where(JobLog.job_id == job_id)
    if after is not None:
        query = query.where(JobLog.id > after)
    rows = session.scalars(query.order_by(JobLog.id).limit(limit))
    return [_log_to_dict(r) for r in rows]


def newest_job_logs(session: Session, job_id: int, n: int) -> list[dict[str, Any]]:
    """The newest `n` log lines of a job, oldest first."""
    rows = session.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id.desc()).limit(n)).all()
    return [_log_to_dict(r) for r in reversed(rows)]


def _log_to_dict(row: JobLog) -> dict[str, Any]:
    return {"id": row.id, "time": iso(row.created_at), "message": row.message}


def workers(session: Session, team_id: int | None) -> list[dict[str, Any]]:
    """Every registered worker with its devices and load; job ids only for the caller's own team (every
    team's for the operator: None)."""
    running: dict[str, list[tuple[int, int]]] = {}
    for job_id, job_team, worker_id in session.execute(
        select(Job.id, Job.team_id, Job.worker_id).where(Job.status == "running", Job.worker_id.is_not(None))
    ):
        running.setdefault(worker_id, []).append((job_id, job_team))
    out = []
    for w in session.scalars(select(Worker).order_by(Worker.pool, Worker.id)):
        jobs = running.get(w.id, [])
        out.append(
            {
                "id": w.id,
                "hostname": w.hostname,
                "pool": w.pool,
                "slots": w.slots,
                "devices": w.devices or [],
                "status": w.status,
                "started_at": iso(w.started_at),
                "last_heartbeat": iso(w.last_heartbeat),
                "running": len(jobs),
                "running_jobs": [j for j, t in jobs if team_id is None or t == team_id],
                "version": w.version,
            }
        )
    return out


def worker_hosts(session: Session) -> list[dict[str, Any]]:
    """Every registered worker host: its genq version, pools, devices, whether it is draining, and when it was
    last seen (its workers' latest heartbeat; the host row itself is written when a worker starts)."""
    beats = dict(session.execute(select(Worker.hostname, func.max(Worker.last_heartbeat)).group_by(Worker.hostname))
                 .tuples().all())
    return [{"hostname": h.hostname, "version": h.version, "pools": h.pools or [], "devices": h.devices or [],
             "draining": h.draining, "drain_deadline": iso(h.drain_deadline),
             "last_seen": iso(max(filter(None, (h.last_seen, beats.get(h.hostname))), default=None))}
            for h in session.scalars(select(WorkerHost).order_by(WorkerHost.hostname))]


def job_counts(session: Session) -> dict[str, int]:
    """Jobs per status, all teams (for /metrics)."""
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
