"""/api/v1/jobs: submit, list, show, cancel, and a job's metrics, outputs, artifacts and logs."""

from __future__ import annotations

from flask import g, jsonify, request, url_for

from genq.datasets import bad_string
from genq.db.models import JOB_STATUSES, Job, Team
from genq.errors import InvalidInput
from genq.jobs.service import MAX_ID, cancel_job, owned, retry_job, submit_job
from genq.jobs.views import job_to_dict, latest_jobs, visible_team
from genq.metrics import MAX_STEP
from genq.web import queries, state
from genq.web.api import api_blueprint, query_choice, query_int, read_json
from genq.web.auth import require_writer

bp = api_blueprint("api_jobs")
MAX_POINTS = 10_000  # a 4K screen at twice the pixel density; 1M points in 10k buckets take ~0.25 s on SQLite


@bp.post("/jobs")
def submit():
    """Submit a train or generate job."""
    caller = require_writer("submit jobs")
    body = read_json()
    with state().db.session() as s:
        job = submit_job(s, state().settings, s.get(Team, caller.team_id), body, caller.is_operator)
        out, job_team = job_to_dict(s, job, forecast=False), job.team_id
    state().events.status(out["id"], job_team, "queued", wake=True)  # the scheduler dispatches it now
    return jsonify(out), 201, {"Location": url_for("api_jobs.show", job_id=out["id"])}


@bp.get("/jobs")
def index():
    """The team's jobs, newest first: ?status=&type=&team=&limit=&before=."""
    status = query_choice("status", JOB_STATUSES)
    kind = query_choice("type", ("train", "generate"))
    limit = query_int("limit", 50, 1, 200, clamp=True)
    before = query_int("before", None, 1, MAX_ID, clamp=True)
    with state().db.session() as s:
        # a token sees only its own team's jobs; the operator every team's, or ?team='s
        team_id = visible_team(s, g.caller, request.args.get("team"))
        jobs, cursor = latest_jobs(s, team_id, status=status, type=kind, limit=limit, before=before)
        return jsonify({"jobs": [job_to_dict(s, j, brief=True) for j in jobs], "next": cursor})


@bp.get("/jobs/<id:job_id>")
def show(job_id: int):
    """One job."""
    with state().db.session() as s:
        return jsonify(job_to_dict(s, owned(s, Job, job_id, g.caller.scope, "job")))


@bp.post("/jobs/<id:job_id>/cancel")
def cancel(job_id: int):
    """Cancel a queued job now, or ask a running one to stop after a checkpoint (202)."""
    caller = require_writer("cancel jobs")
    with state().db.session() as s:
        job = cancel_job(s, owned(s, Job, job_id, caller.scope, "job"))
        out, job_team = job_to_dict(s, job), job.team_id
    state().events.status(job_id, job_team, out["status"], wake=True)  # a dispatched job frees its slot
    return jsonify(out), 202


@bp.get("/jobs/<id:job_id>/metrics")
def metrics(job_id: int):
    """{"series": {name: [[step, value], ...]}}; ?name= picks some, ?start=&end= a step range. ?points=N groups
    each series in SQL into at most N buckets: "series" has each bucket's last point, "bands" its min and max
    ([[step, min, max], ...], so no spike is lost) and "bucket" its width in steps. ?max_points=N (older) keeps
    N evenly spaced points instead."""
    max_points = query_int("max_points", None, 1, 1_000_000)
    points = query_int("points", None, 1, MAX_POINTS)
    start = query_int("start", 0, 0, MAX_STEP, clamp=True)
    end = query_int("end", MAX_STEP, 0, MAX_STEP, clamp=True)
    if end < start:
        raise InvalidInput(f"query parameter 'end' ({end}) must not be below 'start' ({start})")
    if points is not None and max_points is not None:
        raise InvalidInput("give query parameter 'points' or 'max_points', not both")
    # Metric names are short plain strings; anything else (NUL bytes, say) cannot match: keep it from SQL.
    names = tuple(n for n in request.args.getlist("name") if n and len(n) <= 64 and not bad_string(n)) or None
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        if request.args.getlist("name") and names is None:  # only names no series can have
            return jsonify({"series": {}} if points is None else {"series": {}, "bands": {}, "bucket": {}})
        if points is not None:
            return jsonify(queries.bucketed_series(s, job_id, names, start, end, points))
        return jsonify({"series": queries.metric_series(s, job_id, max_points, names, start, end)})


@bp.get("/jobs/<id:job_id>/outputs")
def outputs(job_id: int):
    """{"outputs": [{"id", "index", "row", "row_id", "status", "error", "prompt", "kind", "text" or "url"}],
    "next"}: with ?after=ROW or ?limit=N, the outputs of the next N input rows and the row to ask after next
    (null at the end); with ?stored_after=ID, the next N outputs in the order they were stored, to follow a
    running job, and the id to ask after next (ID again when none more are stored yet); without, every output."""
    after = query_int("after", None, -1, MAX_ID, clamp=True)
    stored_after = query_int("stored_after", None, 0, MAX_ID, clamp=True)
    limit = query_int("limit", None, 1, 1000, clamp=True)
    if after is not None and stored_after is not None:
        raise InvalidInput("give ?after=ROW (input order) or ?stored_after=ID (the order rows are stored), not both")
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        if stored_after is not None:
            page, cursor = queries.outputs_stored_after(s, job_id, stored_after, limit or 100)
        elif after is None and limit is None:
            page, cursor = queries.job_outputs(s, job_id), None
        else:
            page, cursor = queries.output_rows_page(s, job_id, after, limit or 100)
        return jsonify({"outputs": page, "next": cursor})


@bp.post("/jobs/<id:job_id>/retry")
def retry(job_id: int):
    """A new generation job for the rows of this one that failed or were never stored ({"only_failed": true},
    the default) or for all its rows ({"only_failed": false}), with the same params (201)."""
    caller = require_writer("retry jobs")
    body = read_json() if request.get_data() else {}
    with state().db.session() as s:
        job = owned(s, Job, job_id, caller.scope, "job")
        out, job_team = job_to_dict(s, retry_job(s, job, body), forecast=False), job.team_id
    state().events.status(out["id"], job_team, "queued", wake=True)
    return jsonify(out), 201, {"Location": url_for("api_jobs.show", job_id=out["id"])}


@bp.get("/jobs/<id:job_id>/samples")
def samples(job_id: int):
    """{"steps", "step", "samples"}: the steps with gallery samples, and the samples of ?step= (default: the last)."""
    step = query_int("step", None, 0, MAX_STEP)
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        steps = queries.sample_steps(s, job_id)
        if step is None and steps:
            step = steps[-1]
        drawn = queries.job_outputs(s, job_id, step) if step is not None else []
        return jsonify({"steps": steps, "step": step, "samples": drawn})


@bp.get("/jobs/<id:job_id>/artifacts")
def artifacts(job_id: int):
    """{"artifacts": [...]}: checkpoints, samples and output files."""
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        return jsonify({"artifacts": queries.job_artifacts(s, job_id)})


@bp.get("/jobs/<id:job_id>/logs")
def logs(job_id: int):
    """{"logs": [{"id", "time", "message"}]}; ?after=LOG_ID returns only newer lines (for `genq logs -f`)."""
    after = query_int("after", None, 0, 2**63 - 1)
    limit = query_int("limit", 1000, 1, 1000, clamp=True)
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        return jsonify({"logs": queries.job_logs(s, job_id, min(after, MAX_ID) if after else after, limit)})
