"""Where a job stands: its queue position, expected start (or finish) and why it waits, from the policy's
forecast (genq.jobs.policy.forecast) of its pool: computed once per database session and pool, and reused by
later requests for up to FORECAST_SECONDS while the pool's queued and running jobs stay the same (a forecast of
10,000 queued jobs costs a few hundred milliseconds; the check, two reads of indexes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.db.models import Job, utcnow
from genq.jobs.policy import forecast
from genq.jobs.pool import Forecast, Running
from genq.jobs.snapshot import StepTimes, pool_snapshot, running_jobs, seconds, team_names

FORECAST_SECONDS = 2.0  # about a scheduler tick: ETAs move with time and usage, not only with the queue
_recent: dict[tuple[str, str], tuple[float, tuple, dict[int, Forecast]]] = {}  # (database, pool) -> forecast


def _pool_state(session: Session, pool: str) -> tuple:
    """What changes whenever a job joins, leaves or moves in `pool`'s queue, or starts or ends there: counts, sums
    of ids and priorities, and the newest submission (ids restart in an emptied database), read from indexes."""
    def of(status: str):
        return (select(func.count(), func.sum(Job.id), func.sum(Job.priority), func.max(Job.created_at))
                .where(Job.status == status, Job.pool == pool))
    return (*session.execute(of("queued")).one(), *session.execute(of("running")).one())


@dataclass(frozen=True)
class Standing:
    queue_position: int | None
    eta: datetime | None  # expected start while queued, expected finish while running
    wait_reason: str | None


def waiting(pool: str | None = None) -> Select[tuple[Job]]:
    """Queued jobs not yet handed to a worker, by priority then age (the policy orders teams among them)."""
    query = select(Job).where(Job.status == "queued", Job.dispatched_at.is_(None))
    if pool is not None:
        query = query.where(Job.pool == pool)
    return query.order_by(Job.priority.desc(), Job.created_at, Job.id)


def _settings(session: Session) -> Settings:
    return session.info.get("settings") or Settings.from_env()


def _when(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def pool_forecast(session: Session, pool: str) -> dict[int, Forecast]:
    """Every queued job of `pool` with its forecast; cached in the session (one page, one computation) and, for
    FORECAST_SECONDS, in the process while the pool's jobs stay the same."""
    cache = session.info.setdefault("forecasts", {})
    if pool in cache:
        return cache[pool]
    if "now" in session.info:  # a caller's own clock: computed for it alone
        cache[pool] = forecast(pool_snapshot(session, _settings(session), pool, session.info["now"]))
        return cache[pool]
    key, state = (str(session.get_bind().url), pool), _pool_state(session, pool)
    when, seen, fc = _recent.get(key, (0.0, None, None))
    if seen != state or time.monotonic() - when > FORECAST_SECONDS:
        fc = forecast(pool_snapshot(session, _settings(session), pool, utcnow()))
        _recent[key] = (time.monotonic(), state, fc)
    cache[pool] = fc
    return fc


def pool_running(session: Session, pool: str) -> dict[int, Running]:
    """The running jobs of `pool` with their expected ends; cached in the session."""
    cache = session.info.setdefault("running", {})
    if pool not in cache:
        cache[pool] = {r.id: r for r in running_jobs(session, pool, utcnow(), team_names(session),
                                                     StepTimes.load(session))}
    return cache[pool]


def standing(session: Session, job: Job) -> Standing:
    """`job`'s queue position, ETA and wait reason (all None once it finished)."""
    if job.status == "running":
        mine = pool_running(session, job.pool).get(job.id)
        return Standing(None, _when(mine.expected_end) if mine else None, None)
    if job.status != "queued":
        return Standing(None, None, None)
    if job.dispatched_at is not None:
        return Standing(0, job.dispatched_at, "sent to a worker: starting")
    fc = pool_forecast(session, job.pool).get(job.id)
    if fc is None:
        return Standing(None, None, None)
    return Standing(fc.position, _when(fc.eta), fc.reason)


def queue_position(session: Session, job: Job) -> int | None:
    """How many jobs will be dispatched before `job` in its pool (0: next); None once it left the queue."""
    return standing(session, job).queue_position


def eta_seconds(at: datetime | None) -> float | None:
    """Seconds from now until `at`, for displays."""
    return None if at is None else at.replace(tzinfo=UTC).timestamp() - seconds(utcnow())
