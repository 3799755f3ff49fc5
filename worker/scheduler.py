"""The scheduler process: reconciles job rows with reality, then dispatches queued jobs to free slots.

Each tick (every `interval` seconds):
1. reconcile: a running job whose lease expired goes back to the queue (or fails after max_attempts; a
   cancel request on it ends it cancelled); a queued job whose message went unclaimed for too long is
   re-sent; a worker silent for three leases is marked offline;
   running jobs' device-seconds are added to their team's usage (genq.jobs.usage);
2. dispatch: for each pool, the policy (genq.jobs.policy.plan: fair share, quotas, gang reservations,
   preemption) reads a snapshot of the pool and picks what starts; each picked job gets `dispatched_at`
   committed first (under its team's row lock, which makes the device quota hold) and then a Celery message
   with its id; jobs to preempt get `preempt_requested`, and their workers checkpoint and re-queue them.

Between ticks it blocks on the wake list (genq.events.WakeSignal) and dispatches, without reconciling, as
soon as a worker starts or ends a job or the web queues or cancels one: a job reaches an idle worker in
milliseconds rather than at the next tick. Reconciling stays on the tick: it is what finds the work lost
with a worker or a message, and the tick alone still does everything when wakes are lost.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import bindparam, exists, func, literal, select, union_all, update

from genq.config import Settings
from genq.db import Database, Job, JobLog, Team, Worker, utcnow
from genq.db.clock import db_now
from genq.events import Publisher, WakeSignal
from genq.jobs.policy import BACKFILL_DEPTH, plan
from genq.jobs.pool import Plan, Snapshot, TeamState
from genq.jobs.snapshot import StepRates, StepTimes, pool_snapshot, team_states
from genq.jobs.usage import accrue, week_gpu_hours
from genq.worker.celery_app import TASK_NAME, host_queue, make_celery, queue_name
from genq.worker.retry import TRANSIENT

log = logging.getLogger("genq.scheduler")
# Per pool, the slots of its online workers (held 0) and the devices its jobs hold (held 1), in one statement
# built once (at every round, building three cost more than SQLite took to run them). The holding jobs are two
# index ranges (running; queued and sent) of the pools with workers: not an OR, nor a sent test after the
# status alone, that read every queued row (0.7 ms of SQLite's time with 10,000 queued).
_ONLINE = select(Worker.pool).where(Worker.status == "online")
_ONLINE_WORKERS = select(Worker.id).where(Worker.status == "online")
# A running job holds a slot of the online workers only when it runs on one: one on a draining host holds none.
FREE_SLOTS = union_all(
    select(Worker.pool, func.sum(Worker.slots), literal(0)).where(Worker.status == "online").group_by(Worker.pool),
    *(select(Job.pool, func.sum(Job.gpus), literal(1)).where(holding, Job.pool.in_(_ONLINE)).group_by(Job.pool)
      for holding in ((Job.status == "running") & Job.worker_id.in_(_ONLINE_WORKERS),
                      (Job.status == "queued") & Job.dispatched_at.is_not(None))))
# take_slot's two UPDATEs, built once on the tables: an ORM UPDATE built at every call took 3x as long (2.1
# against 0.63 ms for both on SQLite, 4.2 against 2.6 on PostgreSQL), most of it building the statement.
_T, _J, _W = Team.__table__.c, Job.__table__.c, Worker.__table__.c
LOCK_TEAM = (update(Team.__table__).where(_T.id == bindparam("team")).values(usage=_T.usage)
             .returning(_T.max_gpus, _T.gpu_hours_per_week))
SEND = (update(Job.__table__).where(_J.id == bindparam("job"), _J.status == "queued", _J.dispatched_at.is_(None))
        .values(dispatched_at=bindparam("now")))
# What reconcile recovers, each one condition for both its read and its write: leases expired, messages sent but
# never claimed, workers silent.
EXPIRED = (_J.status == "running") & (_J.lease_expires_at < bindparam("now"))
UNCLAIMED = (_J.status == "queued") & (_J.dispatched_at < bindparam("stale"))
SILENT = _W.status.in_(("online", "draining")) & (_W.last_heartbeat < bindparam("silent"))
# Every tick's reads with a job running, built once too: whether reconcile has anything to write (most ticks, not),
# and when the pool's longest-running preemptible job started (may_preempt).
DUE = select(exists().where(EXPIRED), exists().where(UNCLAIMED), exists().where(SILENT))
FIRST_PREEMPTIBLE = select(func.min(func.coalesce(_J.run_started_at, _J.dispatched_at))).where(
    _J.pool == bindparam("pool"), _J.status == "running", _J.preemptible)
STEP_TIMES_SECONDS = 30.0  # how long the recent step times of finished jobs are reused
TEAMS_SECONDS = 1.0  # how long the teams' weights, quotas and usage are reused between decisions
STEP_RATES_SECONDS = 10.0  # how long a running job's step rate is reused


class Scheduler:
    def __init__(self, settings: Settings, broker_url: str):
        self.settings, self.broker_url = settings, broker_url
        # No liveness round trip per session (3-4 a dispatch): a failed tick is retried (run), and its error
        # replaces every pooled connection.
        self.db = Database(settings.database_url, pre_ping=False)
        self.celery = make_celery(broker_url)
        self.events = Publisher(broker_url)
        self._times: tuple[float, StepTimes] | None = None
        self._teams: tuple[float, tuple[dict[int, str], dict[str, TeamState]]] | None = None
        self._rates = StepRates(STEP_RATES_SECONDS)

    def reconcile(self) -> None:
        """Recover what crashed workers and lost messages left behind."""
        s_ = self.settings
        with self.db.reading() as s:  # most ticks find nothing to recover: one read, no write transaction
            now = db_now(s)  # leases are in database time: no host's clock matters
            bounds = {"now": now, "stale": now - timedelta(seconds=s_.dispatch_timeout_seconds),
                      "silent": now - timedelta(seconds=3 * s_.lease_seconds)}
            due = s.execute(DUE, bounds).one()
        changed = self._recover(bounds) if any(due) else []
        with self.db.session() as s:
            accrue(s, now, s_.usage_half_life_hours)
        for job_id, team_id, status in changed:
            self.events.status(job_id, team_id, status)

    def _recover(self, bounds: dict[str, datetime]) -> list[tuple[int, int, str]]:
        """reconcile's writes, by DUE's conditions and `bounds`: expired leases re-queued (or failed, or cancelled),
        unclaimed messages sent again, silent workers marked offline; returns (job, team, status) of the jobs
        changed, to publish once committed."""
        changed, now = [], bounds["now"]
        with self.db.session() as s:
            expired = s.scalars(select(Job).where(EXPIRED).with_for_update(skip_locked=True), bounds).all()
            for job in expired:
                who = job.worker_id
                if job.cancel_requested:
                    job.status, job.finished_at = "cancelled", now
                    message = f"cancelled; its worker {who} stopped answering"
                elif (lost := job.attempts - job.preemptions) >= job.max_attempts:
                    # `preemptions` counts every run the platform asked back (preempted, drained, shut down): no
                    # failure, so not counted here
                    job.status, job.finished_at = "failed", now
                    job.error = (f"the worker running this job stopped answering {lost} times "
                                 f"(max_attempts {job.max_attempts}); last worker: {who}")
                    message = job.error
                else:
                    job.status, job.dispatched_at = "queued", None
                    message = (f"lease of worker {who} expired; re-queued to resume from step "
                               f"{job.checkpoint_step or 0}")
                job.worker_id, job.lease_expires_at = None, None
                changed.append((job.id, job.team_id, job.status))
                s.add(JobLog(job_id=job.id, message=message))
                log.warning("job %s: %s", job.id, message)
            resent = s.execute(update(Job.__table__).where(UNCLAIMED).values(dispatched_at=None), bounds).rowcount
            if resent:
                log.warning("%d dispatched jobs were never claimed; sending them again", resent)
            s.execute(update(Worker.__table__).where(SILENT).values(status="offline"), bounds)
        return changed

    def free_slots(self) -> dict[str, int]:
        """Per pool: slots of online workers minus jobs dispatched or running there."""
        slots: dict[str, int] = {}
        busy: dict[str, int] = {}
        with self.db.reading() as s:
            for pool, n, held in s.execute(FREE_SLOTS):
                into = busy if held else slots
                into[pool] = into.get(pool, 0) + int(n or 0)
        return {pool: n - busy.get(pool, 0) for pool, n in slots.items()}

    def step_times(self) -> StepTimes:
        """Recent step times of finished jobs, re-read at most every STEP_TIMES_SECONDS."""
        if self._times is None or time.monotonic() - self._times[0] > STEP_TIMES_SECONDS:
            with self.db.session() as s:
                self._times = (time.monotonic(), StepTimes.load(s))
        return self._times[1]

    def teams(self, session) -> tuple[dict[int, str], dict[str, TeamState]]:
        """Team names and states (weights, quotas, usage), re-read at most every TEAMS_SECONDS: usage moves on
        the tick, and a quota is enforced by take_slot whatever this copy says."""
        if self._teams is None or time.monotonic() - self._teams[0] > TEAMS_SECONDS:
            self._teams = (time.monotonic(), team_states(session, utcnow(), self.settings.usage_half_life_hours))
        return self._teams[1]

    def may_preempt(self, pool: str) -> bool:
        """Whether a running job of `pool` has run long enough to be preempted (genq.jobs.policy._may_lose): with
        no free slot, a decision can do nothing else. A burst of submissions to a busy pool wakes the scheduler
        for each; without this check every wake read a snapshot and planned (~5 ms of a core each)."""
        least = self.settings.preempt_min_run_seconds
        if least < 0:
            return False
        with self.db.reading() as s:
            began = s.scalar(FIRST_PREEMPTIBLE, {"pool": pool})
        return began is not None and (utcnow() - began).total_seconds() >= least

    def decide(self, pool: str, free: int) -> tuple[Plan, Snapshot]:
        """The policy's decisions for `pool` now, from each team's first queued jobs: enough to fill the free
        slots after the ones the policy may set aside (too wide, or too long to backfill a reserved worker)."""
        with self.db.reading() as s:
            snap = pool_snapshot(s, self.settings, pool, utcnow(), head=max(free, 0) + BACKFILL_DEPTH,
                                 times=self.step_times(), teams=self.teams(s), rates=self._rates)
        return plan(snap), snap

    def take_slot(self, job_id: int, team_id: int, gpus: int) -> bool:
        """Mark `job_id` sent, unless its team's quota of devices (or of GPU-hours this week) is spent: the team's
        row is locked while its held devices are counted, so concurrent schedulers cannot both take the last one."""
        with self.db.session() as s:
            # A no-op UPDATE takes the team's row lock (PostgreSQL) or the write lock (SQLite) until commit, and
            # reads the quotas under it.
            limit, hours = s.execute(LOCK_TEAM, {"team": team_id}).one()
            if hours is not None and week_gpu_hours(s, utcnow().date(), team_id).get(team_id, 0.0) >= hours:
                return False
            if limit is not None:
                held = s.scalar(select(func.coalesce(func.sum(Job.gpus), 0)).where(
                    Job.team_id == team_id, Job.id != job_id,
                    (Job.status == "running") | ((Job.status == "queued") & Job.dispatched_at.is_not(None))))
                if held + gpus > limit:
                    return False
            return bool(s.execute(SEND, {"job": job_id, "now": db_now(s)}).rowcount)

    def preempt(self, victims: list[int]) -> None:
        """Ask running jobs to checkpoint and go back to the queue (the worker does it at its next step)."""
        with self.db.session() as s:
            for job_id in victims:
                asked = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.preemptible,
                                                    Job.preempt_requested.is_(False))
                                  .values(preempt_requested=True)).rowcount
                if asked:
                    s.add(JobLog(job_id=job_id, message="preempted to give another team (or a job of higher "
                                                        "priority) its share: checkpointing, then back to the queue"))
                    log.info("job %s: preemption requested", job_id)

    def dispatch(self) -> int:
        """Send the jobs the policy picks to each pool's free slots, and ask for the preemptions it decides;
        returns how many jobs were sent."""
        sent = 0
        for pool, free in self.free_slots().items():
            if free <= 0 and not self.may_preempt(pool):
                continue  # nothing can start and nothing may be preempted: no decision to make
            decision, snap = self.decide(pool, free)
            if decision.preempt:
                self.preempt(decision.preempt)
            teams = {name: team_id for team_id, name in self._teams[1][0].items()}
            queued = {job.id: job for job in snap.queue}
            starts = [(job_id, node) for job_id, node in decision.starts
                      if self.take_slot(job_id, teams[queued[job_id].team], queued[job_id].gpus)]
            # A job of several devices goes to the host the policy holds them on (any of its processes takes it
            # there); one of a single device to whichever process of the pool is idle first, unless a job of
            # several devices holds a host: that host's idle processes would only hand it back, so it too goes
            # to the host the policy placed it on.
            gang = any(job.gpus > 1 for job in snap.running)
            for index, (job_id, node) in enumerate(starts):
                queue = host_queue(pool, node) if gang or queued[job_id].gpus > 1 else queue_name(pool)
                try:
                    self.celery.send_task(TASK_NAME, args=[job_id], queue=queue)
                    sent += 1
                except Exception as exc:  # noqa: BLE001 - Redis is down: undo, and try again next tick
                    # This job and the rest of the batch were never sent: left dispatched, they would hold
                    # their slots until the dispatch timeout.
                    unsent = [job for job, _node in starts[index:]]
                    log.error("could not send job %s to %s (%d jobs left for the next tick): %s",
                              job_id, queue, len(unsent), exc)
                    with self.db.session() as s:
                        s.execute(update(Job).where(Job.id.in_(unsent), Job.status == "queued")
                                  .values(dispatched_at=None))
                    break
        return sent

    def tick(self) -> None:
        self.reconcile()
        self.dispatch()

    def run(self, interval: float = 1.0, stop=None, wakes: WakeSignal | None = None) -> None:
        """Tick every `interval` seconds and dispatch whenever woken in between, until `stop()` is true; survive
        database and Redis outages. `wakes`: where wakes come from (default: the broker's wake list)."""
        log.info("scheduler started")
        wakes = wakes or WakeSignal(self.broker_url, longest=interval)
        delay, next_tick = interval, 0.0
        while not (stop and stop()):
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + interval
                    self.reconcile()
                self.dispatch()
            except Exception as exc:  # noqa: BLE001 - a scheduler that dies strands every job: log and go on
                delay = min(delay * 2, 15.0)
                if isinstance(exc, TRANSIENT):
                    log.warning("scheduler tick failed (%s); retrying in %.0f s", exc, delay)
                else:
                    log.exception("scheduler tick failed; retrying in %.0f s", delay)
                next_tick = 0.0  # a whole tick first once the database answers again
                time.sleep(delay)  # not woken meanwhile: a wake would only meet the same failure
                continue
            delay = interval
            wakes.wait(next_tick - time.monotonic())
