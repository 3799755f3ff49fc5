"""The live scheduler's time per decision with 10,000 queued jobs, on SQLite and on PostgreSQL (called by
bench/scheduling.py). A decision: count the pools' free slots, read the pool's snapshot (each team's queue head,
running jobs, workers, teams), run the policy, and claim the picked job under its team's row lock: what
Scheduler.dispatch does for one free slot, less the Celery send. Peers in the same run: the same decision reading
the running jobs' step rates every time (as it did before the scheduler kept them), and the FIFO query the
scheduler used before the policy (the oldest job of the highest priority, FOR UPDATE SKIP LOCKED, then its
UPDATE). Also what a page showing queue positions and ETAs pays for the pool's forecast: all 10,000 jobs after a
change, the state check otherwise."""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import make_url

from genq.config import Settings
from genq.db import Database, Job, Metric, Team, Worker, utcnow
from genq.jobs.policy import BACKFILL_DEPTH, forecast, plan
from genq.jobs.scheduling_order import pool_forecast, waiting
from genq.jobs.snapshot import pool_snapshot
from genq.worker.scheduler import Scheduler

QUEUED = 10_000
POINTS = 2_000  # loss points of each running job so far (its step rate is read from them)
REPEATS = 200  # the machine is shared: a median of many
DECISION = "fair share: the decision (free slots + snapshot of each team's head + plan)"


def fill(db: Database) -> None:
    """Three teams, two 4-slot workers with 7 jobs running (one slot free; each 10 minutes and POINTS loss
    points into its run), 10,000 queued jobs of 1, 2 or 4 devices (60/25/15 %, as in the simulated week),
    500 finished."""
    rng = random.Random(3)
    now = utcnow()
    with db.session() as s:
        teams = [Team(name=name, weight=w) for name, w in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
        s.add_all(teams)
        s.add_all([Worker(id=f"w{i}", hostname=f"h{i}", pool="default", slots=4, last_heartbeat=now)
                   for i in range(2)])
        s.flush()
        base = {"type": "train", "model": "gpt", "builtin_dataset": "pydoc", "params": {"max_steps": 1000}}
        finished = [{**base, "team_id": teams[i % 3].id, "status": "succeeded", "step": 1000, "run_start_step": 0,
                     "run_started_at": now - timedelta(hours=2, seconds=i), "finished_at": now - timedelta(hours=1)}
                    for i in range(500)]
        running = [{**base, "team_id": teams[i % 3].id, "status": "running", "worker_id": f"w{i % 2}",
                    "params": {"max_steps": 2 * POINTS}, "step": POINTS, "run_start_step": 0,
                    "run_started_at": now - timedelta(minutes=10), "accrued_until": now}
                   for i in range(7)]
        queued = [{**base, "team_id": teams[rng.randrange(3)].id, "status": "queued",
                   "priority": rng.choice((0, 0, 0, 5)), "created_at": now - timedelta(seconds=QUEUED - i),
                   "gpus": rng.choices((1, 2, 4), (60, 25, 15))[0]}
                  for i in range(QUEUED)]
        for rows in (finished, queued):
            s.execute(insert(Job), rows)
        ids = s.scalars(insert(Job).returning(Job.id), running).all()
        s.execute(insert(Metric), [{"job_id": i, "name": "train/loss", "step": step, "value": 1.0,
                                    "created_at": now - timedelta(seconds=600 * (1 - step / POINTS))}
                                   for i in ids for step in range(1, POINTS + 1)])


def scratch_databases(pg_url: str) -> list[tuple[str, str]]:
    """(name, url) of an empty SQLite file and, when `pg_url` answers, an empty PostgreSQL database."""
    out = [("SQLite", f"sqlite:///{Path(tempfile.mkdtemp(prefix='genq-sched-bench-')) / 'bench.db'}")]
    if pg_url:
        try:
            import psycopg

            with psycopg.connect(pg_url, autocommit=True, connect_timeout=3) as conn:
                conn.execute("DROP DATABASE IF EXISTS genq_bench_sched")
                conn.execute("CREATE DATABASE genq_bench_sched")
            out.append(("PostgreSQL", make_url(pg_url).set(database="genq_bench_sched")
                        .render_as_string(hide_password=False)))
        except Exception as exc:  # noqa: BLE001 - no server: SQLite alone, and say so
            print(f"(PostgreSQL skipped: {exc})")
    return out


def median_ms(fn, repeats: int = REPEATS, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        began = clock()
        fn()
        times.append(clock() - began)
    return statistics.median(times) * 1000


def decision_times(pg_url: str) -> dict[str, dict[str, float]]:
    """{backend: {measure: ms}} with 10,000 queued jobs."""
    return {f"{name}: {QUEUED} queued jobs of 1-4 devices, 3 teams, 2 workers x 4 slots, 1 slot free": measure(url)
            for name, url in scratch_databases(pg_url)}


def measure(url: str) -> dict[str, float]:
    """The timings on one database."""
    db = Database(url)
    db.upgrade()
    fill(db)
    if url.startswith("postgresql"):
        with db.engine.begin() as conn:  # the statistics autovacuum keeps on a live server
            conn.execute(text("ANALYZE"))
    gc.collect()
    gc.freeze()  # the 10,000 rows built above are no garbage: keep them out of the timed collections
    home = Path(tempfile.mkdtemp(prefix="genq-sched-home-"))
    settings = Settings(home=home, database_url=url, redis_url=None, artifacts=home / "artifacts")
    scheduler = Scheduler(settings, "redis://127.0.0.1:1/0")  # nothing is sent: the broker is never asked
    picked: list[int] = []

    def decide() -> None:
        decision, snap = scheduler.decide("default", 1)
        job = {j.id: j for j in snap.queue}[decision.starts[0][0]]
        t0 = time.perf_counter()
        team_ids = {name: i for i, name in scheduler._teams[1][0].items()}
        assert scheduler.take_slot(job.id, team_ids[job.team], job.gpus)
        picked.append(time.perf_counter() - t0)
        with db.session() as s:  # undo, so every round decides with the same 10,000 jobs and one free slot
            s.execute(update(Job).where(Job.id == job.id).values(dispatched_at=None))

    def decide_only() -> None:  # what Scheduler.dispatch does before its claims: the free slots, then the plan
        scheduler.decide("default", scheduler.free_slots()["default"])

    def decide_reading_rates() -> None:  # as decide() did before it kept the running jobs' step rates
        scheduler.free_slots()
        with db.reading() as s:
            plan(pool_snapshot(s, settings, "default", utcnow(), head=1 + BACKFILL_DEPTH, times=scheduler.step_times(),
                               teams=scheduler.teams(s)))

    def fifo() -> None:
        with db.session() as s:
            job = s.scalars(waiting("default").limit(1).with_for_update(skip_locked=True)).first()
            job.dispatched_at = utcnow()
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(dispatched_at=None))

    decide()  # warm caches (the step times of finished jobs, connections)
    whole = median_ms(decide)
    claim = statistics.median(picked[1:]) * 1000
    with db.session() as s:
        full = pool_snapshot(s, settings, "default", utcnow())
        count = s.scalar(select(text("count(*)")).select_from(Job).where(Job.status == "queued"))
    assert count == QUEUED

    def page(changed: bool) -> float:
        """ms a page waits for the pool's forecast, after a job moved in the queue or with nothing changed."""
        if changed:
            with db.session() as s:
                s.execute(update(Job).where(Job.id == full.queue[0].id).values(priority=Job.priority + 1))
        began = time.perf_counter()
        with db.session() as s:
            pool_forecast(s, "default")
        return (time.perf_counter() - began) * 1000

    results = {
        DECISION: median_ms(decide_only),
        "  (the scheduler process's CPU time in it; the rest is the database's)":
            median_ms(decide_only, clock=time.process_time),
        "  (of which the pools' free slots, one statement: Scheduler.free_slots)": median_ms(scheduler.free_slots),
        "peer: the same decision, reading the running jobs' step rates each time": median_ms(decide_reading_rates),
        "fair share: then the quota-locked claim (one commit)": claim,
        "fair share: decision + claim + its undo (two commits)": whole,
        "peer, FIFO: the old ordered query + claim + its undo (two commits)": median_ms(fifo),
        "plan() alone on the whole 10,000-job queue in memory": median_ms(lambda: plan(full), 10),
        "a page's forecast after the queue changed (snapshot + forecast of 10,000)":
            statistics.median(page(True) for _ in range(5)),
        "  (of which forecast() in memory)": median_ms(lambda: forecast(full), 5),
        "a page's forecast while the queue is unchanged (the state check)":
            statistics.median(page(False) for _ in range(100)),
    }
    scheduler.db.dispose()
    db.dispose()
    return results
