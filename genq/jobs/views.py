"""Jobs as the API and the dashboard show them: a job's JSON form, a page of a team's jobs, and whose jobs a
listing shows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from genq.api_tokens import same_team, team_named
from genq.db.models import FINISHED, Job, iso, utcnow
from genq.jobs.scheduling_order import Standing, standing
from genq.jobs.schemas import JobOut
from genq.jobs.service import of_team


def job_to_dict(session: Session, job: Job, brief: bool = False, forecast: bool = True) -> dict[str, Any]:
    """The JSON form of a job (CONTRACT.md's fields plus the submission). `brief` gives the prompts' number, not
    the prompts, as for prompts from a dataset (up to 32 MB of them: the dataset has them); forecast=False leaves
    out the queue position, ETA and wait reason (null): a submission's answer does not forecast the pool, which
    costs about a millisecond per queued job and would make a burst of submissions quadratic."""
    where = standing(session, job) if forecast else Standing(None, None, None)
    # a running generation job knows its end from its rows, once enough are done; the forecast times the others
    eta = job.eta_at if job.status == "running" and (job.eta_at is not None or job.rows_total) else where.eta
    if job.status == "running" and eta is not None and eta < utcnow():
        eta = None  # overdue: the end is not known
    out = JobOut(
        id=job.id,
        type=job.type,
        model=job.model,
        team=job.team.name,
        status=job.status,
        progress=job.progress,
        step=job.step,
        attempts=job.attempts,
        queue_position=where.queue_position,
        eta=iso(eta),
        wait_reason=where.wait_reason,
        preemptions=job.preemptions,
        preemptible=job.preemptible,
        gpu_seconds=round(job.gpu_seconds, 3),
        error=job.error,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        dataset=job.builtin_dataset or job.dataset_id,
        source_job=job.source_job_id,
        base=job.base,
        params=job.params,
        prompts=job.prompts,
        priority=job.priority,
        gpus=job.gpus,
        pool=job.pool,
        max_attempts=job.max_attempts,
        checkpoint_step=job.checkpoint_step,
        cancel_requested=job.cancel_requested,
        finished=job.status in FINISHED,
        rows_total=job.rows_total,
        rows_done=job.rows_done,
        rows_failed=job.rows_failed,
        retry_of=job.retry_of,
    ).model_dump()
    if (brief or job.dataset_id is not None) and job.prompts is not None:  # a file's prompts are in the dataset
        out["prompts"] = len(job.prompts)
    return out


def latest_jobs(
    session: Session,
    team_id: int | None,
    *,
    status: str | None = None,
    type: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[Job], int | None]:
    """A page of the team's jobs (every team's with None), newest first, and the cursor for the next page
    (None at the end)."""
    query = select(Job).where(*of_team(team_id))
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


NO_TEAM = -1  # matches no row: a `?team=` naming a team the caller may not see, or none at all


def visible_team(session: Session, caller: Any, name: str | None) -> int | None:
    """The team id a listing shows for `caller` (a web Principal) asked for `?team=name`: the operator sees
    every team's (None) or the named one's; anyone else only their own (another name matches nothing)."""
    if not name:
        return caller.scope
    if caller.is_operator:
        team = team_named(session, name)
        return NO_TEAM if team is None else team.id
    return caller.team_id if same_team(name, caller.team) else NO_TEAM
