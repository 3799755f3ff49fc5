"""The scheduling order: which queued job runs next in a pool. Plain FIFO within priority for now."""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from genq.db.models import Job


def waiting(pool: str | None = None) -> Select[tuple[Job]]:
    """Queued jobs not yet handed to a worker, in the order they will be dispatched."""
    query = select(Job).where(Job.status == "queued", Job.dispatched_at.is_(None))
    if pool is not None:
        query = query.where(Job.pool == pool)
    return query.order_by(Job.priority.desc(), Job.created_at, Job.id)


def queue_position(session: Session, job: Job) -> int | None:
    """How many jobs will be dispatched before `job` in its pool (0: next); None once it left the queue."""
    if job.status != "queued":
        return None
    if job.dispatched_at is not None:
        return 0
    ahead = select(func.count()).select_from(Job).where(
        Job.status == "queued", Job.dispatched_at.is_(None), Job.pool == job.pool,
        (Job.priority > job.priority)
        | ((Job.priority == job.priority) & ((Job.created_at < job.created_at)
                                             | ((Job.created_at == job.created_at) & (Job.id < job.id)))),
    )
    return session.scalar(ahead) or 0
