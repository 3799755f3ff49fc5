"""Why a job waits, read from the database as the scheduler and the API read it: a job wider than its team's
max_gpus (lowered after it was queued), and a pool whose only hosts drain."""

from __future__ import annotations

from sqlalchemy import select

from genq.db.models import Job, Team, WorkerHost, utcnow
from genq.jobs.policy import BACKFILL_DEPTH, plan
from genq.jobs.scheduling_order import standing
from genq.jobs.snapshot import pool_snapshot
from tests.web.conftest import add_job, add_worker
from worker.hosts import drain_host

NEVER = ("needs 2 GPUs, more than team alpha may hold at once (max_gpus 1): it can never start under this quota; "
         "raise max_gpus or cancel it")


def test_jobs_wider_than_the_lowered_max_gpus_hold_back_none_of_their_teams(db, settings):
    add_worker(db, "h:1:a", "H100", 80, slots=2, pool="two")
    wide = [add_job(db, gpus=2, pool="two") for _ in range(BACKFILL_DEPTH + 3)]  # more than the scheduler reads
    narrow = add_job(db, pool="two")
    with db.session() as s:
        s.scalar(select(Team).where(Team.name == "alpha")).max_gpus = 1
    with db.session() as s:  # the scheduler's snapshot: each team's first free slots + BACKFILL_DEPTH jobs
        assert plan(pool_snapshot(s, settings, "two", utcnow(), head=2 + BACKFILL_DEPTH)).starts == [(narrow, "h")]
    with db.session() as s:
        first, last, mine = (standing(s, s.get(Job, i)) for i in (wide[0], wide[-1], narrow))
    assert (first.wait_reason, last.wait_reason, first.eta) == (NEVER, NEVER, None)
    assert (mine.queue_position, mine.wait_reason) == (0, "a slot is free: it starts at this scheduling round")
    assert first.queue_position == 1


def test_a_job_of_a_pool_whose_hosts_drain_names_the_drain(db):
    add_worker(db, "vm:1:a", "H100", 80)
    with db.session() as s:
        s.add(WorkerHost(hostname="vm", version="0", pools=["default"]))
    with db.session() as s:
        drain_host(s, "vm", 0)
    job = add_job(db)
    with db.session() as s:
        assert standing(s, s.get(Job, job)).wait_reason == (
            "the workers of pool 'default' are on draining hosts (vm): it starts once one is undrained or another "
            "worker joins")
