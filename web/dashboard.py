"""The dashboard pages: job list, job page, submit, datasets, workers, blind rating. Same service calls as the API."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from genq import evaluation
from genq.core import base_models
from genq.datasets import BUILTIN_DATASETS, datasets_of
from genq.db.models import JOB_STATUSES, Job, Output, Team
from genq.errors import GenqError, InvalidInput, NotFound
from genq.jobs.estimate import training_estimate
from genq.jobs.params import MODELS
from genq.jobs.schemas import MAX_ID
from genq.jobs.service import cancel_job, of_team, owned, parse_param_lines, submit_job
from genq.jobs.views import job_to_dict, latest_jobs, visible_team
from genq.web import compare as compare_view
from genq.web import queries, state
from genq.web.api import query_job_ids
from genq.web.api.datasets import delete_request_dataset, store_request_file
from genq.web.api.evaluation import pair_to_dict
from genq.web.auth import current_principal, require_writer

bp = Blueprint("dashboard", __name__)


@bp.before_request
def _signed_in():
    g.caller = current_principal()
    if g.caller is None:
        if "Authorization" in request.headers:
            from genq.web.auth import require_principal

            require_principal()  # 401 page
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


@bp.get("/")
def jobs():
    """The team's jobs, 50 a page, newest first: the first page with live status and progress, older pages
    (`?before=ID`, the cursor the page links to) as they stand."""
    status, kind = request.args.get("status") or None, request.args.get("type") or None
    before = request.args.get("before", type=int)  # not a whole number: the first page
    before = None if before is None or before <= 0 else min(before, MAX_ID)  # as the API clamps it
    # A filter naming no status or type (a mistyped link) shows no jobs and says so, as the API's 422 does.
    error = (f"no status '{status}': the statuses are {', '.join(JOB_STATUSES)}" if status not in (None, *JOB_STATUSES)
             else f"no type '{kind}': the types are train and generate" if kind not in (None, "train", "generate")
             else None)
    items, older = [], None
    if error is None:
        with state().db.session() as s:
            rows, older = latest_jobs(s, visible_team(s, g.caller, request.args.get("team")), status=status,
                                      type=kind, limit=JOBS_PAGE, before=before)
            items = [job_to_dict(s, j, brief=True) for j in rows]
    return render_template("jobs.html", jobs=items, status=status, type=kind, statuses=JOB_STATUSES, before=before,
                           older=older, error=error), 400 if error else 200


JOBS_PAGE = 50  # jobs a page of the list shows; the live first page polls the API for as many
PAGE_OUTPUTS = 200  # a batch job's page shows its first outputs; the API and the files have them all
FIRST_ROWS = 20


@bp.get("/jobs/<id:job_id>")
def job(job_id: int):
    """One job: status, progress, loss chart, eval metrics, outputs, artifacts, logs."""
    with state().db.session() as s:
        item = job_to_dict(s, owned(s, Job, job_id, g.caller.scope, "job"))
        evals = queries.latest_metrics(s, job_id)
        outputs = queries.job_outputs(s, job_id, limit=PAGE_OUTPUTS)
        first_rows = queries.output_rows_page(s, job_id, None, FIRST_ROWS)[0] if item["rows_total"] else []
        ratings = evaluation.rating_summary(s, job_id)
        own_scores = evaluation.own_scores(s, g.caller.token_id, job_id)
        artifacts = queries.job_artifacts(s, job_id)
        logs = queries.newest_job_logs(s, job_id, 50)
        steps = queries.sample_steps(s, job_id)
        gallery = queries.job_outputs(s, job_id, steps[-1]) if steps else []
    samples = [a for a in artifacts if a["kind"] == "sample"]
    return render_template(
        "job.html",
        job=item,
        chart_sources=[{"job": job_id, "name": name, "label": name} for name in queries.LOSS_SERIES],
        evals=evals,
        estimate=training_estimate(item["model"], item["params"]) if item["type"] == "train" else None,
        outputs=outputs,
        page_outputs=PAGE_OUTPUTS,
        ratings=ratings,
        own_scores=own_scores,
        artifacts=[a for a in artifacts if a["kind"] != "gallery"],  # those are under "Samples by step"
        samples=samples,
        logs=logs,
        gallery_steps=steps,
        gallery=gallery,
        first_rows=first_rows,
        rates={name: value for name, _, value in evals if name.startswith("throughput/")},
        row_files=[a for a in artifacts if a["name"] in ("outputs.jsonl", "outputs.csv")],
    )


@bp.get("/compare")
def compare():
    """Runs side by side: overlaid curves per metric, the params that differ, final metrics, outputs by prompt."""
    ids = compare_view.job_ids()
    with state().db.session() as s:
        view = compare_view.comparison(s, g.caller.scope, ids)
    return render_template("compare.html", ids=ids, **view)


@bp.post("/jobs/<id:job_id>/cancel")
def cancel(job_id: int):
    """The cancel button."""
    try:
        caller = require_writer("cancel jobs")
        with state().db.session() as s:
            job = cancel_job(s, owned(s, Job, job_id, caller.scope, "job"))
            status, job_team = job.status, job.team_id
        state().events.status(job_id, job_team, status, wake=True)
        flash("Cancelled." if status == "cancelled" else "Cancel requested: the job stops at its next checkpoint.")
    except GenqError as exc:
        flash(exc.message, "error")
    return redirect(url_for("dashboard.job", job_id=job_id))


def _int_field(form, name: str, default: int) -> int:
    raw = (form.get(name) or "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        raise InvalidInput(f"{name} must be a whole number")
    if len(raw) > 20:  # the API says the range of a number it can read
        raise InvalidInput(f"{name} is out of range ({len(raw)} digits)")
    return int(raw)


def _form_body(form) -> dict[str, Any]:
    """The API body for the submit form's fields."""
    kind = form.get("type")
    body: dict[str, Any] = {
        "type": kind,
        "params": parse_param_lines(form.get("params", "")),
        "priority": _int_field(form, "priority", 0),
    }
    if form.get("pool", "").strip():
        body["pool"] = form["pool"].strip()
    if kind == "train":
        body.update(model=form.get("model", ""), dataset=form.get("dataset", ""), gpus=_int_field(form, "gpus", 1))
    elif kind == "generate":
        if form.get("base", "").strip():  # a pretrained model of the models folder, instead of a source job
            body["base"] = form["base"].strip()
        elif not form.get("source_job", "").strip():
            raise InvalidInput("give a source job (a succeeded training job's id) or a base model")
        else:
            body["source_job"] = _int_field(form, "source_job", 0)
        prompts = [line.strip() for line in form.get("prompts", "").splitlines() if line.strip()]
        if form.get("prompts_dataset"):
            body["dataset"] = _int_field(form, "prompts_dataset", 0)
        if prompts:
            body["prompts"] = prompts
    return body


# The form field an error message is about: the first of these words that it contains (in this order, so that
# "model 'gpt' trains on text data, but dataset 3 holds images" points at the dataset).
FIELD_WORDS = (("gpus", "gpus"), ("param", "params"), ("KEY=VALUE", "params"), ("source job", "source_job"),
               ("base '", "base"), ("prompt", "prompts"), ("dataset", "dataset"), ("model", "model"),
               ("priority", "priority"), ("pool", "pool"))


def error_field(message: str) -> str | None:
    """The submit form's field that `message` names, or None (the error then shows above the form)."""
    return next((field for word, field in FIELD_WORDS if word in message), None)


@bp.route("/submit", methods=["GET", "POST"])
def submit():
    """Forms for train and generate jobs; an error is shown next to the field it names."""
    error, status, form = None, 200, request.form if request.method == "POST" else request.args
    if request.method == "POST":
        try:
            caller = require_writer("submit jobs")
            body = _form_body(request.form)
            with state().db.session() as s:
                if caller.is_operator and body.get("source_job"):  # from any team's job: for that team
                    body["team"] = owned(s, Job, body["source_job"], None, "source job").team.name
                job = submit_job(s, state().settings, s.get(Team, caller.team_id), body, caller.is_operator)
                job_id, job_team = job.id, job.team_id
            state().events.status(job_id, job_team, "queued", wake=True)
            flash(f"Job {job_id} queued.")
            return redirect(url_for("dashboard.job", job_id=job_id))
        except GenqError as exc:
            error, status = exc.message, exc.status
    with state().db.session() as s:
        datasets = datasets_of(s, g.caller.team_id)  # a job's dataset is its team's
        sources = [
            {"id": j.id, "model": j.model, "step": j.checkpoint_step if j.status == "cancelled" else None}
            for j in s.scalars(
                select(Job)
                .where(*of_team(g.caller.scope), Job.type == "train",
                       (Job.status == "succeeded") | ((Job.status == "cancelled") & (Job.checkpoint_step > 0)))
                .order_by(Job.id.desc())
                .limit(200)
            )
        ]
    mode = form.get("type") or ("generate" if form.get("source_job") else "train")
    field = error and error_field(error)
    if mode != "generate" and field in ("source_job", "prompts"):
        field = None  # fields the training form lacks: the error shows above the form
    return render_template(
        "submit.html",
        models=list(MODELS),
        model_data={name: model.data for name, model in MODELS.items()},
        builtins=BUILTIN_DATASETS,
        datasets=datasets,
        sources=sources,
        bases=[m["name"] for m in base_models.list_models(state().settings.models_folder) if m["causal_lm"]],
        form=form,
        error=error,
        error_field=field,
        mode=mode,
    ), status


@bp.route("/datasets", methods=["GET", "POST"])
def datasets():
    """The team's datasets and an upload form."""
    error, status = None, 200
    if request.method == "POST":
        try:
            caller = require_writer("upload datasets")
            out = store_request_file(caller.team_id)
            flash(f"Dataset {out['id']} stored as {out['kind']}.")
            return redirect(url_for("dashboard.datasets"))
        except GenqError as exc:
            error, status = exc.message, exc.status
    with state().db.session() as s:
        rows = datasets_of(s, g.caller.scope)  # the operator's: every team's
    return render_template("datasets.html", datasets=rows, builtins=BUILTIN_DATASETS, error=error), status


@bp.post("/datasets/<id:dataset_id>/delete")
def delete_dataset(dataset_id: int):
    """A dataset's delete button."""
    try:
        require_writer("delete datasets")
        flash(f"Dataset {delete_request_dataset(dataset_id)['id']} deleted.")
    except GenqError as exc:
        flash(exc.message, "error")
    return redirect(url_for("dashboard.datasets"))


@bp.get("/workers")
def workers():
    """Workers, devices and load."""
    with state().db.session() as s:
        rows = queries.workers(s, g.caller.scope)
        hosts = queries.worker_hosts(s)
    return render_template("workers.html", workers=rows, hosts=hosts)


@bp.get("/rate")
def rate():
    """Blind A/B judging between the jobs of ?jobs=, with their leaderboard; without ?jobs=, a form to pick them."""
    ids = query_job_ids()
    with state().db.session() as s:
        if ids is None:
            candidates = s.scalars(select(Job).where(Job.id.in_(select(Output.job_id).distinct()),
                                                     *of_team(g.caller.scope)).order_by(Job.id.desc()).limit(100)).all()
            return render_template("rate.html", candidates=candidates, board=None)
        board = evaluation.leaderboard(s, g.caller.scope, ids)
        try:
            pair, no_pair = pair_to_dict(s, evaluation.next_pair(s, g.caller.token_id, g.caller.scope, ids)), None
        except NotFound as exc:  # the jobs exist, but no prompt has outputs of two of them: said on the page
            pair, no_pair = None, exc.message
    return render_template("rate.html", jobs=",".join(map(str, dict.fromkeys(ids))), board=board, pair=pair,
                           no_pair=no_pair)
