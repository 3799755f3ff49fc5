"""Worker hosts: a genq whose schema the database does not match is refused, naming what to upgrade; a drained
host takes no new job and, past its timeout, checkpoints and re-queues the running one; hosts whose clocks are
minutes apart still agree on leases (database time)."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, text

from genq.db import Job, JobLog, Worker, WorkerHost, utcnow
from genq.db.clock import db_now
from genq.errors import InvalidInput
from genq.worker.hosts import VersionMismatch, check_schema, drain_host, register_host, schema_heads, undrain_host
from genq.worker.scheduler import Scheduler
from tests.worker.platform import tiny_gpt
from tests.worker.test_scheduler import add_jobs


def set_schema(db, revision: str) -> None:
    with db.session() as s:
        s.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def genq(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genq", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_worker_is_refused_when_the_database_is_newer_or_older_than_its_genq(db, settings, monkeypatch):
    (head,) = schema_heads()[0]
    with db.session() as s:
        check_schema(s, "gpu-7")  # at head: fine
    set_schema(db, "0099_from_the_future")
    with db.session() as s, pytest.raises(VersionMismatch, match="upgrade genq on gpu-7"):
        check_schema(s, "gpu-7")
    env = {**os.environ, "GENQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = genq(env, "worker")
    assert result.returncode == 1
    assert f"upgrade genq on {socket.gethostname()}" in result.stderr and "0099_from_the_future" in result.stderr
    set_schema(db, "0004")
    result = genq(env, "worker")
    assert result.returncode == 1 and "genq db upgrade" in result.stderr and head in result.stderr
    set_schema(db, head)


def test_a_drains_timeout_must_be_finite_and_not_negative(db, settings):
    with db.session() as s:
        now = db_now(s)
        s.add(WorkerHost(hostname="gpu-9", version="x", pools=["default"], devices=[], draining=False,
                         registered_at=now, last_seen=now))
    for timeout in ("nan", "inf", "-inf", "1e300", "-5", "-0.5"):
        result = genq(dict(os.environ), "worker", "drain", "gpu-9", "--timeout", timeout)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (timeout, result.stderr)
        assert "--timeout" in result.stderr and "from 0 to" in result.stderr, (timeout, result.stderr)
    with db.session() as s:
        assert s.get(WorkerHost, "gpu-9").draining is False, "a refused drain changed nothing"
        for timeout in (float("nan"), float("inf"), 1e300, -5, True, "600"):
            with pytest.raises(InvalidInput, match="timeout"):
                drain_host(s, "gpu-9", timeout)
        assert s.get(WorkerHost, "gpu-9").draining is False
    drained = genq(dict(os.environ), "worker", "drain", "gpu-9", "--timeout", "0")
    assert drained.returncode == 0 and "re-queue after 0 s" in drained.stdout, drained.stderr


def wait_row(platform, job_id: int, predicate, what: str, timeout: float = 120) -> Job:
    def check():
        with platform.db.session() as s:
            job = s.get(Job, job_id)
            return job if predicate(job) else None
    return platform.wait_for(check, timeout, what)


def test_a_drained_host_finishes_nothing_new_and_requeues_after_its_timeout(platform):
    host = socket.gethostname()
    platform.start_scheduler()
    platform.start_worker("a")
    platform.wait_for(lambda: platform.api("GET", "/workers").json()["hosts"], 60, "the host to register")
    long = tiny_gpt(n_layer=2, n_embd=64, max_steps=3000, checkpoint_interval=100, eval_interval=1000)
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": long})
    wait_row(platform, job_id, lambda j: (j.checkpoint_step or 0) >= 100, "a checkpoint")

    drained = genq(platform.env, "worker", "drain", host, "--timeout", "2")
    assert drained.returncode == 0, drained.stderr
    assert genq(platform.env, "worker", "drain", host).returncode == 1  # already draining: said so
    assert "no worker host named" in genq(platform.env, "worker", "drain", "nowhere").stderr
    # past the timeout the running job checkpoints and goes back to the queue...
    requeued = wait_row(platform, job_id, lambda j: j.status == "queued", "the job to be re-queued", 60)
    assert requeued.checkpoint_step >= 100 and requeued.error is None
    with platform.db.session() as s:
        said = s.scalars(select(JobLog.message).where(JobLog.job_id == job_id)).all()
    assert "its host's drain timed out: checkpointed and re-queued" in said  # not "worker shutting down"
    hosts = platform.api("GET", "/workers").json()["hosts"]
    assert [(h["hostname"], h["draining"]) for h in hosts] == [(host, True)]
    page = requests.get(f"{platform.url}/workers", timeout=30, headers={"Authorization": f"Bearer {platform.token}"})
    assert page.status_code == 200 and "draining" in page.text and host in page.text
    # ...and the draining host does not take it again
    second = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": tiny_gpt()})
    time.sleep(6)
    with platform.db.session() as s:
        assert [s.get(Job, j).status for j in (job_id, second)] == ["queued", "queued"]
        assert s.scalars(select(Worker.status)).all() == ["draining"]
    undrained = genq(platform.env, "worker", "undrain", host)
    assert undrained.returncode == 0, undrained.stderr
    wait_row(platform, second, lambda j: j.status == "succeeded", "the new job to run once undrained", 180)
    with platform.db.session() as s:
        assert s.get(WorkerHost, host).draining is False


def test_a_host_drained_since_its_workers_last_heartbeat_claims_nothing(db, settings, redis_url):
    """The drain takes effect at the next claim, not at the worker's next heartbeat (up to 2 s later): in between,
    a host drained with another host idle took every job the scheduler sent to the pool."""
    from genq.worker.runner import WorkerContext

    host = socket.gethostname()
    worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url), "default")  # its heartbeat not started
    with db.session() as s:
        register_host(s, host, "default", worker.devices)
        s.add(Worker(id=worker.id, hostname=host, slots=1, last_heartbeat=utcnow()))
    (job_id,) = add_jobs(db, 1, dispatched_at=utcnow())
    with db.session() as s:
        drain_host(s, host, None)
    assert not worker.heartbeat.draining.is_set(), "the worker has not heard of the drain"
    assert worker.claim(job_id) is None
    assert worker.heartbeat.draining.is_set(), "the claim told it"
    worker.run(job_id)  # the message as the worker gets it: handed back, no attempt counted
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts, job.worker_id, job.dispatched_at) == ("queued", 0, None, None)
        assert s.scalars(select(JobLog.message).where(JobLog.job_id == job_id)).all() == []
        undrain_host(s, host)
    assert worker.claim(job_id).attempts == 1, "undrained, the host claims again"
    worker.db.dispose()


def test_runs_handed_back_do_not_count_against_max_attempts(db, settings, redis_url):
    """A job drained past its timeout (or whose worker shut down gracefully) three times, then lost with its
    worker once, stopped answering once: it goes back to the queue, and fails only once it stopped answering
    max_attempts times."""
    from genq.worker.runner import WorkerContext

    worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url), "default")
    scheduler = Scheduler(settings, redis_url)
    (job_id,) = add_jobs(db, 1, max_attempts=3)
    for _ in range(3):
        job = worker.claim(job_id)
        worker._finish(job, worker.hooks(job), "shutdown", [])  # checkpointed and re-queued, as a drain does

    def lose_the_worker() -> Job:
        assert worker.claim(job_id) is not None
        with db.session() as s:
            s.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=5)
        scheduler.reconcile()
        with db.session() as s:
            return s.get(Job, job_id)

    assert lose_the_worker().status == "queued", "three hand-backs and one loss: it stopped answering once"
    assert lose_the_worker().status == "queued"
    failed = lose_the_worker()
    assert (failed.status, failed.attempts) == ("failed", 6)
    assert "stopped answering 3 times (max_attempts 3)" in failed.error
    worker.db.dispose()
    scheduler.db.dispose()


def test_clocks_minutes_apart_do_not_break_leases(platform):
    """The scheduler's clock runs 10 minutes ahead, the worker's 10 minutes behind: with leases in host time
    every lease would look 20 minutes expired to the scheduler and the job would be taken away at once."""
    platform.spawn("scheduler", "--interval", "0.2", GENQ_CLOCK_SKEW_SECONDS="600")
    platform.spawn("worker", "--name", "late", GENQ_CLOCK_SKEW_SECONDS="-600")
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": tiny_gpt(max_steps=150, checkpoint_interval=50)})
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1, "a lease was taken from a live worker"
    with platform.db.session() as s:
        worker = s.scalars(select(Worker)).one()
        now = db_now(s)
    # the heartbeat wrote database time, not its own clock 10 minutes behind
    assert abs((worker.last_heartbeat - now).total_seconds()) < 120
