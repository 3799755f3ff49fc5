"""Submitting, retrying and cancelling jobs: the one implementation behind the API and the dashboard (their
JSON form and listings: genq.jobs.views).

Everything is validated before the first row is written, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from genq.api_tokens import team_named
from genq.config import Settings
from genq.core import base_models, spec, strict_json
from genq.core.errors import DataError
from genq.datasets import (
    BUILTIN_DATASETS,
    bad_string,
    dataset_file,
    read_prompt_rows,
)
from genq.db.models import FINISHED, JOB_STATUSES, Dataset, Job, JobLog, Output, Team, Worker, utcnow
from genq.errors import Conflict, Forbidden, InvalidInput, NotFound, refused_as_invalid_input
from genq.jobs.estimate import check_fits
from genq.jobs.params import MODELS, validate_generate_params, validate_train_params
from genq.jobs.schemas import MAX_ID, TrainJobRequest, parse_request, parse_retry

# A generation job's rows x num_samples: each output is a database row and, while the job runs, worker memory;
# 10,000 rows x 1,000 samples was accepted and held a worker for minutes before it could be cancelled.
MAX_OUTPUTS = 100_000


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


def owned(session: Session, model: type, ident: object, team_id: int | None, what: str):
    """The row `model(ident)` if it belongs to `team_id` (any team's with None: the operator), else NotFound
    (other teams' rows look missing)."""
    if not isinstance(ident, int) or isinstance(ident, bool) or not 1 <= ident <= MAX_ID:
        raise NotFound(f"{what} {ident} not found")
    row = session.get(model, ident)
    if row is None or (team_id is not None and row.team_id != team_id):
        raise NotFound(f"{what} {ident} not found")
    return row


def of_team(team_id: int | None) -> tuple:
    """The conditions (for .where(*...)) that a job is team `team_id`'s: none for None, the operator's view."""
    return () if team_id is None else (Job.team_id == team_id,)


def _named(session: Session, model: type, ident: object, team: Team, operator: bool, what: str, remedy: str):
    """The row a job of `team` names (a dataset, a source job), or NotFound; the operator, who sees every team's,
    is told whose it is and `remedy`."""
    try:
        return owned(session, model, ident, team.id, what)
    except NotFound:
        other = owned(session, model, ident, None, what) if operator else None
        if other is None:
            raise
        raise InvalidInput(f"{what} {ident} belongs to team '{other.team.name}', not '{team.name}': "
                           + remedy.format(team=team.name, other=other.team.name)) from None


def _dataset(session: Session, dataset_id: int, team: Team, operator: bool) -> Dataset:
    """The dataset a job of `team` names (genq.jobs.service._named)."""
    return _named(session, Dataset, dataset_id, team, operator, "dataset",
                  "upload it for team '{team}' (the upload's form field 'team')")


def _dataset_id(value: int | str) -> int | str:
    """A dataset id given as a string ("12") as the int it names; a name (or anything else) as it is."""
    text = value.strip() if isinstance(value, str) else ""
    # ASCII digits only: str.isdigit() also takes "²" and "١", which int() refuses or reads as another id
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    return value


def check_gpus(session: Session, gpus: int, pool: str) -> None:
    """Refuse more devices than the widest host of `pool` holds (its online workers' slots together). With no
    worker online the job is accepted and waits: its wait_reason says so."""
    if gpus == 1:
        return
    per_host = (select(func.sum(Worker.slots).label("slots")).where(Worker.pool == pool, Worker.status == "online")
                .group_by(Worker.hostname).subquery())
    widest = session.scalar(select(func.max(per_host.c.slots)))
    if widest is not None and gpus > widest:
        raise InvalidInput(f"field 'gpus': {gpus} devices on one worker host, but the widest host of pool "
                           f"'{pool}' holds {widest}")


def check_data_parallel(model: str | None, params: dict, gpus: int) -> None:
    """Refuse gpus > 1 for what cannot train data-parallel, and a batch that does not split evenly."""
    if gpus == 1:
        return
    if model is None or not MODELS[model].data_parallel:
        able = ", ".join(name for name, kind in MODELS.items() if kind.data_parallel)
        what = f"model '{model}'" if model else "a generation job"
        raise InvalidInput(f"field 'gpus': {what} runs on one device; gpus > 1 is for training {able} "
                           "(data-parallel)")
    if params["batch_size"] % gpus:
        raise InvalidInput(f"field 'gpus': batch_size {params['batch_size']} does not split evenly over {gpus} "
                           f"devices (each takes an equal share of every batch)")


def submit_job(session: Session, settings: Settings, team: Team, body: object, operator: bool = False) -> Job:
    """Validate `body` (see CONTRACT.md) for `team` (any team for the `operator`), insert a queued job; a
    GenqError writes nothing."""
    req = parse_request(body)
    check_clean(req.model_dump(), "request")
    if req.team is not None and req.team.lower() != team.name.lower():  # names are compared ignoring case
        if not operator:
            raise Forbidden(
                f"this token belongs to team '{team.name}'; it cannot submit jobs for team '{req.team}'"
            )
        team = team_named(session, req.team)
        if team is None:
            raise InvalidInput(f"team '{req.team}' does not exist (create it with `genq team create`)")
    if not isinstance(req, TrainJobRequest):
        check_data_parallel(None, {}, req.gpus)  # before the pool's widest host: no host makes gpus > 1 apply
    check_gpus(session, req.gpus, req.pool)
    if team.max_gpus is not None and req.gpus > team.max_gpus:
        raise InvalidInput(f"the job asks for {req.gpus} GPUs, more than team '{team.name}' may hold at once "
                           f"(max_gpus {team.max_gpus}): it could never start")
    job = Job(
        preemptible=req.preemptible,
        team=team,  # the object, not its id: the answer reads job.team without loading it again
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
            dataset = _dataset(session, ref, team, operator)
            kind, job.dataset_id, label = dataset.kind, dataset.id, f"dataset {dataset.id}"
        if kind != need:
            raise InvalidInput(f"model '{req.model}' trains on {need} data, but {label} holds {kind}")
        if job.dataset_id is not None and (check := MODELS[req.model].check_data) is not None:
            try:
                # what the recipe would refuse once a worker loads it (a text's bytes bound its bpe tokens)
                check(job.params, {**(dataset.info or {}), "bytes": dataset.size_bytes})
            except DataError as exc:
                raise InvalidInput(f"{label}: {exc}") from None
        check_data_parallel(req.model, job.params, req.gpus)
        # each device holds the whole model and its share of the batch (genq.core.parallel)
        check_fits(session, req.model, {**job.params, "batch_size": job.params["batch_size"] // req.gpus}, req.pool)
    else:
        if req.base is not None:
            if req.source_job is not None:
                raise InvalidInput("give either 'source_job' or 'base', not both")
            job.model, job.base = pretrained_base(req.base, settings)
        else:
            if req.source_job is None:
                raise InvalidInput("a generate job needs 'source_job' (a train job) or 'base' (a model of the "
                                   "models folder)")
            source = _named(session, Job, req.source_job, team, operator, "source job",
                            "a team generates from its own models (submit it for team '{other}')")
            if source.type != "train":
                raise InvalidInput(f"source job {source.id} is a {source.type} job; generate from a train job")
            if source.status != "succeeded" and not (source.status == "cancelled" and source.checkpoint_step):
                raise Conflict(f"source job {source.id} is {source.status}; a train job generates once it has "
                               "succeeded, or from the checkpoint it saved when cancelled")
            job.model, job.source_job_id = source.model, source.id
        job.params = validate_generate_params(req.params)
        check_clean(job.params, "params")
        if req.prompts is not None and req.dataset is not None:
            raise InvalidInput("give either 'prompts' or a prompts 'dataset', not both")
        if req.dataset is not None:
            dataset = _dataset(session, req.dataset, team, operator)
            if dataset.kind != "prompts":
                raise InvalidInput(
                    f"dataset {dataset.id} holds {dataset.kind}; generate needs a prompts dataset"
                )
            job.dataset_id = dataset.id
            with dataset_file(settings, dataset) as path:
                rows = read_prompt_rows(path, "." + dataset.path.rsplit(".", 1)[-1], job.params.get("template"))
            job.prompts = [row.prompt or "" for row in rows]
        else:
            if job.params.get("template") is not None:
                raise InvalidInput("the param 'template' applies to a CSV prompts dataset, not to inline prompts")
            job.prompts = req.prompts
        job.rows_total = len(job.prompts or [None])
        if (outputs := job.rows_total * job.params.get("num_samples", 1)) > MAX_OUTPUTS:
            raise InvalidInput(f"the job would make {outputs:,} outputs ({job.rows_total:,} rows x num_samples "
                               f"{job.params['num_samples']}); at most {MAX_OUTPUTS:,}: split it into several jobs")
        if job.params.get("seed") is None:  # fixed now: a resumed or retried job draws the same texts
            job.params = {**job.params, "seed": secrets.randbelow(2**31)}
    session.add(job)
    dataset_id = job.dataset_id
    try:
        session.flush()
    except IntegrityError:
        if dataset_id is None:
            raise
        raise NotFound(f"dataset {dataset_id} not found: it was deleted just now") from None
    session.add(JobLog(job_id=job.id, message=f"submitted: {job.type} {job.model} in pool '{job.pool}'"))
    return job


def pretrained_base(base: str, settings: Settings) -> tuple[str, str]:
    """(model kind, base) for a generate job sampling `base` of the models folder, or InvalidInput naming why not."""
    kind = spec.pretrained()
    if kind is None:
        raise InvalidInput("no model kind of this genq samples a pretrained base")
    with refused_as_invalid_input():
        base_models.resolve(base, settings.models_folder)
    return kind.name, base


def retry_job(session: Session, job: Job, body: object) -> Job:
    """A new queued generation job for `job`'s rows that are not stored as ok (only_failed, the default) or
    for all of them, with the same source, prompts and params; InvalidInput/Conflict write nothing."""
    only_failed = parse_retry(body).only_failed
    if job.type != "generate":
        raise InvalidInput(f"job {job.id} is a {job.type} job; only generation jobs retry rows")
    if job.status not in FINISHED:
        raise Conflict(f"job {job.id} is {job.status}; retry it once it has finished")
    # One retry at a time: a second click on the dashboard's button would run the same rows twice. The no-op
    # UPDATE holds the job's row (PostgreSQL) or the write lock (SQLite) until commit, so of two retries sent
    # together the second waits, then finds the first.
    session.execute(update(Job).where(Job.id == job.id).values(retry_of=Job.retry_of))
    unfinished = Job.status.in_([status for status in JOB_STATUSES if status not in FINISHED])  # an indexed few
    pending = session.execute(select(Job.id, Job.status).where(unfinished, Job.retry_of == job.id).limit(1)).first()
    if pending is not None:
        raise Conflict(f"job {pending.id} already retries rows of job {job.id} ({pending.status}); wait for it to "
                       "finish, or cancel it")
    rows = job.only_rows if job.only_rows is not None else list(range(job.rows_total or len(job.prompts or [None])))
    ok = set(session.scalars(select(Output.row).where(Output.job_id == job.id, Output.status == "ok")))
    if only_failed:
        rows = [r for r in rows if r not in ok]
        if not rows:
            raise Conflict(f"job {job.id} has no failed rows to retry")
    # A row fails alone only on its input (a bad row of the file, a prompt the model cannot read): the same
    # rows, model and params fail the same way again. A retry of nothing else would be a job sure to fail.
    errors = (Output.job_id == job.id, Output.status == "error")
    if set(rows) <= set(session.scalars(select(Output.row).where(*errors))) - ok:
        first = session.scalar(select(Output.error).where(*errors).order_by(Output.row).limit(1))
        raise Conflict(f"every row of job {job.id} to retry failed on its input, and would again (the first: "
                       f"{clean(first or 'no message')}); fix the prompts and submit a new job")
    new = Job(team_id=job.team_id, type="generate", model=job.model, source_job_id=job.source_job_id,
              base=job.base, dataset_id=job.dataset_id, params=job.params, prompts=job.prompts,
              priority=job.priority, preemptible=job.preemptible, gpus=job.gpus, pool=job.pool, status="queued",
              max_attempts=job.max_attempts, rows_total=len(rows), only_rows=rows, retry_of=job.id)
    session.add(new)
    session.flush()
    session.add(JobLog(job_id=new.id, message=f"submitted: a retry of {len(rows)} rows of job {job.id}"))
    return new


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
            then = ("it saves a checkpoint and stops" if job.type == "train"
                    else "it stops, keeping the outputs stored so far")
            session.add(JobLog(job_id=job.id, message=f"cancel requested; {then}"))
    session.flush()
    session.refresh(job)
    if not done.rowcount and not asked.rowcount:
        raise Conflict(f"job {job.id} already {job.status}; only a queued or running job can be cancelled")
    return job


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
