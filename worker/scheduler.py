"""The scheduler process: reconciles job rows with reality, then dispatches queued jobs to free slots.

Each tick (every `interval` seconds):
1. reconcile: a running job whose lease expired goes back to the queue (or fails after max_attempts; a
   cancel request on it ends it cancelled); a queued job whose message went unclaimed for too long is
   re-sent; a worker silent for three leases is marked offline;
2. dispatch: for each pool, free slots = slots of its online workers minus its jobs in flight; the next jobs
   by policy (genq.jobs.scheduling_order) get `dispatched_at` committed first and then a Celery message with
   their id.

Between ticks it blocks on the wake list (genq.events.WakeSignal) and dispatches, without reconciling, as
soon as a worker starts or ends a job or the web queues or cancels one: a job reaches an idle worker in
milliseconds rather than at the next tick. Reconciling stays on the tick: it is what finds the work lost
with a worker or a message, and the tick alone still does everything when wakes are lost.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from genq.config import Settings
from genq.db import Database, Job, JobLog, Worker
from genq.db.clock import db_now
from genq.events import Publisher, WakeSignal
from genq.jobs.scheduling_order import waiting
from genq.worker.celery_app import TASK_NAME, make_celery, queue_name
from genq.worker.retry import TRANSIENT

log = logging.getLogger("genq.scheduler")


class Scheduler:
    def __init__(self, settings: Settings, broker_url: str):
        self.settings, self.broker_url = settings, broker_url
        self.db = Database(settings.database_url)
        self.celery = make_celery(broker_url)
        self.events = Publisher(broker_url)

    def reconcile(self) -> None:
        """Recover what crashed workers and lost messages left behind."""
        s_ = self.settings
        changed: list[tuple[int, int, str]] = []  # (job, team, status), published once committed
        with self.db.session() as s:
            now = db_now(s)  # leases are in database time: no host's clock matters
            expired = s.scalars(select(Job).where(Job.status == "running", Job.lease_expires_at < now)
                                .with_for_update(skip_locked=True)).all()
            for job in expired:
                who = job.worker_id
                if job.cancel_requested:
                    job.status, job.finished_at = "cancelled", now
                    message = f"cancelled; its worker {who} stopped answering"
                elif job.attempts >= job.max_attempts:
                    job.status, job.finished_at = "failed", now
                    job.error = (f"the worker running this job stopped answering {job.attempts} times "
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
            stale = now - timedelta(seconds=s_.dispatch_timeout_seconds)
            resent = s.execute(update(Job).where(Job.status == "queued", Job.dispatched_at < stale)
                               .values(dispatched_at=None)).rowcount
            if resent:
                log.warning("%d dispatched jobs were never claimed; sending them again", resent)
            silent = now - timedelta(seconds=3 * s_.lease_seconds)
            s.execute(update(Worker).where(Worker.status.in_(("online", "draining")), Worker.last_heartbeat < silent)
                      .values(status="offline"))
        for job_id, team_id, status in changed:
            self.events.status(job_id, team_id, status)

    def free_slots(self) -> dict[str, int]:
        """Per pool: slots of online workers minus jobs dispatched or running there."""
        with self.db.session() as s:
            slots = dict(s.execute(select(Worker.pool, func.sum(Worker.slots))
                                   .where(Worker.status == "online").group_by(Worker.pool)).all())
            busy = dict(s.execute(select(Job.pool, func.count()).where(
                (Job.status == "running") | ((Job.status == "queued") & Job.dispatched_at.is_not(None))
            ).group_by(Job.pool)).all())
        return {pool: int(n) - int(busy.get(pool, 0)) for pool, n in slots.items()}

    def dispatch(self) -> int:
        """Send the next jobs of each pool to its free slots; returns how many were sent."""
        sent = 0
        for pool, free in self.free_slots().items():
            if free <= 0:
                continue
            with self.db.session() as s:
                jobs = s.scalars(waiting(pool).limit(free).with_for_update(skip_locked=True)).all()
                ids = [job.id for job in jobs]
                now = db_now(s)
                for job in jobs:
                    job.dispatched_at = now
            for index, job_id in enumerate(ids):
                try:
                    self.celery.send_task(TASK_NAME, args=[job_id], queue=queue_name(pool))
                    sent += 1
                except Exception as exc:  # noqa: BLE001 - Redis is down: undo, and try again next tick
                    # This job and the rest of the batch were never sent: left dispatched, they would hold
                    # their slots until the dispatch timeout.
                    unsent = ids[index:]
                    log.error("could not send job %s to %s (%d jobs left for the next tick): %s",
                              job_id, queue_name(pool), len(unsent), exc)
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
