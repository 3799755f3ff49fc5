"""Submitting, cancelling and describing jobs: the one implementation behind the API and the dashboard.

Everything is validated before the first row is written, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from genq import strict_json
from genq.config import Settings
from genq.datasets import (
    BUILTIN_DATASETS,
    bad_string,
    dataset_file,
    read_prompts,
)
from genq.db.models import FINISHED, Dataset, Job, JobLog, Team, iso, utcnow
from genq.errors import Conflict, Forbidden, InvalidInput, NotFound
from genq.jobs.estimate import check_fits
from genq.jobs.params import MODELS, validate_generate_params, validate_train_params
from genq.jobs.scheduling_order import queue_position
from genq.jobs.schemas import MAX_ID, JobOut, TrainJobRequest, parse_request


def check_clean(value: Any, where: str) -> None:
    """Refuse NaN/infinite numbers, NUL characters and lone surrogates: SQL and JSON cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{where} must be a finite number")
    if isinstance(value, str) and bad_string(value):
        raise InvalidInput(f"{where} holds a NUL character or invalid Unicode")
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_clean(k, where)
            check_clean(v, f"{where}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_clean(v, f"{where}[{i}]")


def owned(session: Session, model: type, ident: object, team_id: int, what: str):
    """The row `model(ident)` if it belongs to `team_id`, else NotFound (other teams' rows look missing)."""
    if not isinstance(ident, int) or isinstance(ident, bool) or not 1 <= ident <= MAX_ID:
        raise NotFound(f"{what} {ident} not found")
    row = session.get(model, ident)
    if row is None or row.team_id != team_id:
        raise NotFound(f"{what} {ident} not found")
    return row


def _dataset_id(value: int | str) -> int | str:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        return int(value.strip())
    return value


def submit_job(session: Session, settings: Settings, team: Team, body: object) -> Job:
    """Validate `body` (see CONTRACT.md) for `team`, insert a queued job; a GenqError writes nothing."""
    req = parse_request(body)
    check_clean(req.model_dump(), "request")
    if req.team is not None and req.team != team.name:
        raise Forbidden(
            f"this token belongs to team '{team.name}'; it cannot submit jobs for team '{req.team}'"
        )
    job = Job(
        team_id=team.id,
        type=req.type,
        priority=req.priority,
        gpus=req.gpus,
        pool=req.pool,
        status="queued",
        max_attempts=settings.max_attempts,
    )
    if isinstance(req, TrainJobRequest):
        job.model = req.model
        job.params = validate_train_params(req.model, req.params)
        check_clean(job.params, "params")
        need = MODELS[req.model].data
        ref = _dataset_id(req.dataset)
        if isinstance(ref, str):
            if ref not in BUILTIN_DATASETS:
                raise NotFound(
                    f"dataset '{clean(ref)}' not found: give an uploaded dataset id or a built-in "
                    f"name ({', '.join(BUILTIN_DATASETS)})"
                )
            kind, job.builtin_dataset = BUILTIN_DATASETS[ref], ref
            label = f"built-in dataset '{ref}'"
        else:
            dataset = owned(session, Dataset, ref, team.id, "dataset")
            kind, job.dataset_id, label = dataset.kind, dataset.id, f"dataset {dataset.id}"
        if kind != need:
            raise InvalidInput(f"model '{req.model}' trains on {need} data, but {label} holds {kind}")
        check_fits(session, req.model, job.params, req.pool)
    else:
        source = owned(session, Job, req.source_job, team.id, "source job")
        if source.type != "train":
            raise InvalidInput(f"source job {source.id} is a {source.type} job; generate from a train job")
        if source.status != "succeeded":
            raise Conflict(
                f"source job {source.id} is {source.status}; only a succeeded train job can generate"
            )
        job.model, job.source_job_id = source.model, source.id
        job.params = validate_generate_params(req.params)
        check_clean(job.params, "params")
        if req.prompts is not None and req.dataset is not None:
            raise InvalidInput("give either 'prompts' or a prompts 'dataset', not both")
        if req.dataset is not None:
            dataset = owned(session, Dataset, req.dataset, team.id, "dataset")
            if dataset.kind != "prompts":
                raise InvalidInput(
                    f"dataset {dataset.id} holds {dataset.kind}; generate needs a prompts dataset"
                )
            job.dataset_id = dataset.id
            with dataset_file(settings, dataset) as path:
                job.prompts = read_prompts(path, "." + dataset.path.rsplit(".", 1)[-1])
        else:
            job.prompts = req.prompts
    session.add(job)
    session.flush()
    session.add(JobLog(job_id=job.id, message=f"submitted: {job.type} {job.model} in pool '{job.pool}'"))
    return job


def clean(text: str, limit: int = 80) -> str:
    """`text` shortened for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def cancel_job(session: Session, job: Job) -> Job:
    """Cancel a queued job at once, or ask a running one to stop (the worker checkpoints and ends it)."""
    now = utcnow()
    # Conditional UPDATEs: a worker may claim or finish the job between our read and our write.
    done = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "queued")
        .values(status="cancelled", finished_at=now, cancel_requested=True, lease_expires_at=None)
    )
    if done.rowcount:
        session.add(JobLog(job_id=job.id, message="cancelled before it started"))
    else:
        asked = session.execute(
            update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True)
        )
        if asked.rowcount:
            session.add(JobLog(job_id=job.id, message="cancel requested; stopping at the next checkpoint"))
    session.flush()
    session.refresh(job)
    if not done.rowcount and not asked.rowcount:
        raise Conflict(f"job {job.id} already {job.status}; only a queued or running job can be cancelled")
    return job


def job_to_dict(session: Session, job: Job, brief: bool = False) -> dict[str, Any]:
    """The JSON form of a job (CONTRACT.md's fields plus the submission); `brief` leaves out the prompts."""
    out = JobOut(
        id=job.id,
        type=job.type,
        model=job.model,
        team=job.team.name,
        status=job.status,
        progress=job.progress,
        step=job.step,
        attempts=job.attempts,
        queue_position=queue_position(session, job),
        error=job.error,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        dataset=job.builtin_dataset or job.dataset_id,
        source_job=job.source_job_id,
        params=job.params,
        prompts=job.prompts,
        priority=job.priority,
        gpus=job.gpus,
        pool=job.pool,
        max_attempts=job.max_attempts,
        checkpoint_step=job.checkpoint_step,
        cancel_requested=job.cancel_requested,
        finished=job.status in FINISHED,
    ).model_dump()
    if brief:
        out["prompts"] = None if job.prompts is None else len(job.prompts)
    return out


def parse_value(text: str) -> Any:
    """A KEY=VALUE value: JSON when it parses (4, 0.1, true, null, "x"), else the plain string."""
    try:
        return strict_json.loads(text)
    except ValueError:
        return text


def parse_param_lines(text: str) -> dict[str, Any]:
    """Params from a JSON object or from KEY=VALUE lines (blank lines and # comments skipped)."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            params = strict_json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"params are not a valid JSON object: {exc}") from None
        if not isinstance(params, dict):
            raise InvalidInput("params must be a JSON object")
        return params
    params: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"params line {number} must look like KEY=VALUE, got '{clean(line)}'")
        params[key.strip()] = parse_value(value.strip())
    return params


def latest_jobs(
    session: Session,
    team_id: int,
    *,
    status: str | None = None,
    type: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[Job], int | None]:
    """A page of the team's jobs, newest first, and the cursor for the next page (None at the end)."""
    query = select(Job).where(Job.team_id == team_id)
    if status:
        query = query.where(Job.status == status)
    if type:
        query = query.where(Job.type == type)
    if before is not None:
        query = query.where(Job.id < before)
    jobs = list(session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, (jobs[-1].id if more and jobs else None)
