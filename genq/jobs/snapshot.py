"""Policy snapshots from SQL: one pool's workers, running jobs, queue and teams (genq.jobs.policy's input),
with each job's expected run time from its own step rate or from recent runs of similar jobs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import bindparam, case, func, select, union_all
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.db.models import Job, Metric, Team, Worker
from genq.jobs.pool import Node, Running, Snapshot, TeamState, Waiting
from genq.jobs.usage import decayed_usage, week_gpu_hours

SIMILAR_RUNS = 20  # recent finished runs of the same model that time its steps

# A training job's length (validated: an int), read out of its params by the database: decoding 10,000 params
# in Python costs more. Only a training job's: a generation job's params do not have it.
MAX_STEPS = case((Job.type == "train", Job.params["max_steps"].as_integer())).label("max_steps")
QUEUE_COLUMNS = (Job.id, Job.team_id, Job.priority, Job.created_at, Job.gpus, Job.type, Job.model, MAX_STEPS,
                 Job.checkpoint_step)

# The scheduler's statements, built once with bound parameters: building a statement costs more CPU than
# SQLite takes to run it, and the scheduler runs them at every free slot.
_POOL, _TEAM = bindparam("pool"), bindparam("team")
HOLDING_COLUMNS = (Job.id, Job.team_id, Job.status, Job.type, Job.model, MAX_STEPS, Job.gpus, Job.priority,
                   Job.worker_id, Job.step, Job.run_start_step, Job.checkpoint_step, Job.run_started_at,
                   Job.dispatched_at, Job.preemptible, Job.preempt_requested)
# Jobs holding slots: running, or sent and not yet claimed. Two index ranges (status and pool; dispatched_at)
# in one statement, not one OR that reads every queued row.
HOLDING = union_all(select(*HOLDING_COLUMNS).where(Job.status == "running", Job.pool == _POOL),
                    select(*HOLDING_COLUMNS).where(Job.dispatched_at.is_not(None), Job.status == "queued",
                                                   Job.pool == _POOL))
# The policy's nodes are hosts: a job of N devices takes N slots of one host, whichever processes serve them.
# Those of a draining host (`genq worker drain`: WorkerHost.draining, mirrored in its workers' status) take no
# new job: they are read apart, only to say why a job waits.
WORKERS = (select(Worker.hostname, Worker.status, func.sum(Worker.slots))
           .where(Worker.pool == _POOL, Worker.status.in_(("online", "draining")))
           .group_by(Worker.hostname, Worker.status))
RATES = (select(Metric.job_id, func.min(Metric.step), func.max(Metric.step), func.min(Metric.created_at),
                func.max(Metric.created_at))
         .join(Job, Job.id == Metric.job_id)
         .where(Metric.job_id.in_(bindparam("ids", expanding=True)), Metric.name == "train/loss",
                Metric.created_at >= Job.run_started_at)
         .group_by(Metric.job_id))
QUEUED = select(*QUEUE_COLUMNS).where(Job.status == "queued", Job.pool == _POOL, Job.dispatched_at.is_(None))
# A team's first jobs leave out those wider than its max_gpus (`cap`): they could not start, and a row of them
# would hide its narrower jobs from the scheduler (the forecast, reading every job, gives them their reason).
NO_CAP = 2**31 - 1
NEXT_LEVEL = select(func.max(Job.priority)).where(Job.status == "queued", Job.pool == _POOL, Job.team_id == _TEAM,
                                                  Job.dispatched_at.is_(None), Job.priority < bindparam("below"),
                                                  Job.gpus <= bindparam("cap"))
LEVEL = (QUEUED.where(Job.team_id == _TEAM, Job.priority == bindparam("level"), Job.gpus <= bindparam("cap"))
         .order_by(Job.created_at, Job.id).limit(bindparam("n")))


@cache
def heads(teams: int):
    """One statement for `teams` teams (team0, team1, ...): each team's oldest jobs (at most `head`, none wider
    than `cap0`, `cap1`, ...) of its highest priority, an index range each."""
    def top_level(i: int):
        team, cap = bindparam(f"team{i}"), bindparam(f"cap{i}")
        top = (select(func.max(Job.priority)).where(Job.status == "queued", Job.pool == _POOL, Job.team_id == team,
                                                    Job.dispatched_at.is_(None), Job.gpus <= cap).scalar_subquery())
        return select(*QUEUED.where(Job.team_id == team, Job.priority == top, Job.gpus <= cap)
                      .order_by(Job.created_at, Job.id).limit(bindparam("head")).subquery().c)
    parts = [top_level(i) for i in range(teams)]
    return union_all(*parts) if teams > 1 else parts[0]


def host_of(worker_id: str | None) -> str | None:
    """The host of a worker id ("HOST:PID:TOKEN", genq.worker.runner)."""
    return worker_id.rsplit(":", 2)[0] if worker_id else None


def seconds(t: datetime) -> float:
    """A naive UTC time as epoch seconds (the policy's clock)."""
    return t.replace(tzinfo=UTC).timestamp()


@dataclass
class StepTimes:
    """Seconds per step (train) or per job (generate) by (type, model), from recent finished runs."""

    rates: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> StepTimes:
        out = cls()
        recent = (select(Job.type, Job.model, Job.run_started_at, Job.finished_at, Job.step, Job.run_start_step)
                  .where(Job.status == "succeeded", Job.run_started_at.is_not(None))
                  .order_by(Job.finished_at.desc()).limit(20 * SIMILAR_RUNS))
        samples: dict[tuple[str, str], list[float]] = {}
        for kind, model, began, ended, step, first in session.execute(recent):
            took = (ended - began).total_seconds()
            steps = (step or 0) - (first or 0)
            if kind == "train" and steps > 0:
                samples.setdefault((kind, model), []).append(took / steps)
            elif kind == "generate":
                samples.setdefault((kind, model), []).append(took)
        out.rates = {key: statistics.median(v[:SIMILAR_RUNS]) for key, v in samples.items()}
        return out

    def expected(self, kind: str, model: str, max_steps: int | None, from_step: int | None) -> float | None:
        """Seconds a queued job is expected to run, or None when nothing similar has run."""
        rate = self.rates.get((kind, model))
        if rate is None:
            return None
        if kind == "train":
            return rate * max((max_steps or 0) - (from_step or 0), 0)
        return rate


def team_names(session: Session) -> dict[int, str]:
    """Team names by id."""
    return dict(session.execute(select(Team.id, Team.name)).all())


def team_states(session: Session, now: datetime, half_life_hours: float) -> tuple[dict[int, str], dict[str, TeamState]]:
    """Team names by id, and each team's state for the policy."""
    week = week_gpu_hours(session, now.date())
    names, states = {}, {}
    for team in session.scalars(select(Team)):
        names[team.id] = team.name
        states[team.name] = TeamState(team.name, team.weight, decayed_usage(team, now, half_life_hours),
                                      team.max_gpus, team.gpu_hours_per_week, week.get(team.id, 0.0))
    return names, states


def step_rates(session: Session, job_ids: list[int]) -> dict[int, float]:
    """Seconds per step of running jobs, from the times their train/loss points were logged in this run (so a
    run's start-up, data loading and model building, does not count as steps)."""
    if not job_ids:
        return {}
    rows = session.execute(RATES, {"ids": job_ids})
    return {job_id: (last - first).total_seconds() / (last_step - first_step)
            for job_id, first_step, last_step, first, last in rows if last_step > first_step}


class StepRates:
    """step_rates kept by a caller that asks often (the scheduler): a job's rate is read again after `seconds`
    (it moves slowly, and reading it scans the run's loss points), a job without one at every call."""

    def __init__(self, seconds: float):
        self.seconds, self.read_at, self.rates = seconds, 0.0, {}

    def get(self, session: Session, job_ids: list[int]) -> dict[int, float]:
        if time.monotonic() - self.read_at > self.seconds:
            self.read_at, self.rates = time.monotonic(), {}
        self.rates.update(step_rates(session, [j for j in job_ids if j not in self.rates]))
        return {j: self.rates[j] for j in job_ids if j in self.rates}


def running_jobs(session: Session, pool: str, now: datetime, names: dict[int, str],
                 times: StepTimes, kept: StepRates | None = None) -> list[Running]:
    """Jobs holding slots in `pool`: running, or sent and not yet claimed (their step rates from `kept`, when
    the caller keeps them)."""
    rows = session.execute(HOLDING, {"pool": pool}).all()
    training = [job.id for job in rows if job.status == "running" and job.type == "train"]
    rates = kept.get(session, training) if kept else step_rates(session, training)
    for job in rows:  # a model running now times the queued runs of that model too, when none has finished
        if job.id in rates:
            times.rates.setdefault(("train", job.model), rates[job.id])
    out = []
    for job in rows:
        began = job.run_started_at or job.dispatched_at or now
        end = None
        if job.status == "running" and job.type == "train":
            max_steps = job.max_steps or 0
            rate = rates.get(job.id)
            if rate is not None:
                end = seconds(now) + rate * max(max_steps - job.step, 0)
            elif (rate := times.rates.get(("train", job.model))) is not None:
                end = seconds(began) + rate * max(max_steps - (job.run_start_step or 0), 0)
        elif (took := times.expected(job.type, job.model, job.max_steps, job.checkpoint_step)) is not None:
            end = seconds(began) + took
        since_checkpoint = 0.0
        if job.type == "train" and job.status == "running" and job.step > (job.checkpoint_step or 0):
            since_checkpoint = (now - began).total_seconds() * (job.step - (job.checkpoint_step or 0)) / max(
                job.step - (job.run_start_step or 0), 1)
        out.append(Running(
            id=job.id, team=names.get(job.team_id, "?"), gpus=job.gpus,
            node=host_of(job.worker_id) if job.status == "running" else None, priority=job.priority,
            started_at=seconds(began), expected_end=end,
            # a generation job has no checkpoint to resume from; a job still being sent cannot be asked yet
            preemptible=job.preemptible and job.type == "train" and job.status == "running",
            at_risk_seconds=min(since_checkpoint, (now - began).total_seconds()),
            preempt_requested=job.preempt_requested))
    return out


def waiting_jobs(session: Session, pool: str, team_ids: list[int] | None = None,
                 head: int | None = None, caps: dict[int, int | None] | None = None) -> list[tuple]:
    """Queued, unsent jobs of `pool` as QUEUE_COLUMNS rows: all of them, or each team's first `head` in
    scheduling order (read from the queue index, so 10,000 queued jobs cost no more than 10) that are no wider
    than its cap (`caps`: max_gpus by team id; None or absent: no cap)."""
    if head is None:
        return list(session.execute(QUEUED, {"pool": pool}))
    if not team_ids:
        return []
    cap = {t: NO_CAP if (caps or {}).get(t) is None else caps[t] for t in team_ids}
    rows = list(session.execute(heads(len(team_ids)),
                                {"pool": pool, "head": head, **{f"team{i}": t for i, t in enumerate(team_ids)},
                                 **{f"cap{i}": cap[t] for i, t in enumerate(team_ids)}}))
    got: dict[int, list[tuple]] = {}
    for row in rows:
        got.setdefault(row.team_id, []).append(row)
    for team_id, mine in got.items():
        below = min(r.priority for r in mine)
        while len(mine) < head:  # the highest priority holds fewer than `head`: read the next levels
            lower = session.scalar(NEXT_LEVEL, {"pool": pool, "team": team_id, "below": below, "cap": cap[team_id]})
            if lower is None:
                break
            more = session.execute(LEVEL, {"pool": pool, "team": team_id, "level": lower, "cap": cap[team_id],
                                           "n": head - len(mine)}).all()
            rows += more
            mine += more
            below = lower
    return rows


def pool_snapshot(session: Session, settings: Settings, pool: str, now: datetime, head: int | None = None,
                  times: StepTimes | None = None, teams: tuple[dict[int, str], dict[str, TeamState]] | None = None,
                  rates: StepRates | None = None) -> Snapshot:
    """The policy's view of `pool` at `now`; with `head`, only each team's first `head` queued jobs; `times`,
    `teams` (team_states) and `rates` when the caller keeps them."""
    names, teams = teams or team_states(session, now, settings.usage_half_life_hours)
    times = StepTimes(dict((times or StepTimes.load(session)).rates))  # a copy: running jobs add to it
    nodes = session.execute(WORKERS, {"pool": pool}).all()
    running = running_jobs(session, pool, now, names, times, rates)
    queue = [
        Waiting(id=job_id, team=names[team_id], priority=priority, created_at=seconds(created), gpus=gpus,
                expected_seconds=times.expected(kind, model, max_steps, checkpoint))
        for job_id, team_id, priority, created, gpus, kind, model, max_steps, checkpoint
        in waiting_jobs(session, pool, list(names), head, {i: teams[n].max_gpus for i, n in names.items()})
    ]
    return Snapshot(now=seconds(now), nodes=[Node(host, int(n)) for host, status, n in nodes if status == "online"],
                    running=running, queue=queue, teams=teams, pool=pool,
                    min_run_seconds=settings.preempt_min_run_seconds,
                    draining=[Node(host, int(n)) for host, status, n in nodes if status == "draining"])
