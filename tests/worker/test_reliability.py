"""No job lost, none run twice: real worker processes killed, Redis killed, messages delivered twice."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from sqlalchemy import func, select, text

from genq.db import Job, JobLog, Metric, Worker
from genq.redis_server import EmbeddedRedis
from genq.worker.celery_app import TASK_NAME, make_celery
from tests.worker.platform import tiny_gpt

# Long enough to interrupt mid-way on one core, short enough for the suite.
LONG = tiny_gpt(n_layer=2, n_embd=64, max_steps=1000, checkpoint_interval=500, eval_interval=500)


def row(platform, job_id: int) -> Job:
    with platform.db.session() as s:
        return s.get(Job, job_id)


def loss_steps(platform, job_id: int) -> list[int]:
    """train/loss steps in the order they were recorded."""
    with platform.db.session() as s:
        return list(s.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "train/loss")
                              .order_by(Metric.id)))


def started_lines(platform, job_id: int) -> list[str]:
    with platform.db.session() as s:
        return [m for m in s.scalars(select(JobLog.message).where(JobLog.job_id == job_id)) if "started on" in m]


def wait_checkpoint(platform, job_id: int, at_least: int) -> int:
    return platform.wait_for(lambda: (row(platform, job_id).checkpoint_step or 0) >= at_least and
                             row(platform, job_id).checkpoint_step, 120, f"a checkpoint at step {at_least}")


def kill(process, sig=signal.SIGKILL) -> None:
    os.killpg(process.pid, sig)


def test_sigkilled_worker_job_resumes_from_checkpoint_elsewhere(platform):
    platform.start_scheduler()
    first = platform.start_worker("a")
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": LONG})
    checkpoint = wait_checkpoint(platform, job_id, 500)
    # Kill it between two checkpoints, once steps past the checkpoint are on record: freeze, read, kill.
    platform.wait_for(lambda: row(platform, job_id).step >= checkpoint + 50, 60, "steps past the checkpoint")
    kill(first, signal.SIGSTOP)
    killed = row(platform, job_id)
    kill(first)
    first.wait()
    assert killed.status == "running" and killed.checkpoint_step < killed.step < LONG["max_steps"]
    with platform.db.session() as s:
        last_metric_before_kill = s.scalar(select(func.max(Metric.id)))
    platform.start_worker("b")
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    steps = loss_steps(platform, job_id)
    backwards = [a - b for a, b in zip(steps, steps[1:]) if b < a]
    assert backwards and max(backwards) <= LONG["checkpoint_interval"], f"steps went back {backwards}"
    assert max(steps) == LONG["max_steps"]
    # The second attempt continues the loss curve from the checkpoint instead of restarting from scratch.
    with platform.db.session() as s:
        losses = s.execute(select(Metric.id, Metric.step, Metric.value).where(
            Metric.job_id == job_id, Metric.name == "train/loss").order_by(Metric.id)).all()
    resumed = next(m for m in losses if m.id > last_metric_before_kill)
    assert resumed.step > killed.checkpoint_step >= 500
    assert resumed.value < 0.9 * losses[0].value, f"resumed loss {resumed.value:.3f} vs initial {losses[0].value:.3f}"


def test_a_worker_restarted_on_the_host_takes_back_a_killed_ones_job_without_waiting_for_its_lease(platform):
    platform.start_scheduler()
    lease = {"GENQ_LEASE_SECONDS": "600"}  # ten minutes: only the restart can end it within the test
    first = platform.spawn("worker", "--name", "a", **lease)
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": LONG})
    platform.wait_for(lambda: row(platform, job_id).step > 0, 120, "the first steps")
    kill(first)
    first.wait()
    platform.spawn("worker", "--name", "b", **lease)
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job["error"]
    with platform.db.session() as s:
        said = list(s.scalars(select(JobLog.message).where(JobLog.job_id == job_id, JobLog.message.like("%exited%"))))
        workers = dict(s.execute(select(Worker.id, Worker.status)).all())
    assert len(said) == 1 and f":{first.pid}:" in said[0]
    assert [status for worker, status in workers.items() if f":{first.pid}:" in worker] == ["offline"]


def test_sigterm_requeues_with_checkpoint_then_finishes(platform):
    platform.start_scheduler()
    first = platform.start_worker("a")
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": {**LONG, "checkpoint_interval": 200}})
    wait_checkpoint(platform, job_id, 200)
    platform.wait_for(lambda: row(platform, job_id).step >= 250, 60, "steps past the checkpoint")
    kill(first, signal.SIGTERM)
    assert first.wait(60) == 0
    job = row(platform, job_id)
    assert job.status == "queued" and job.error is None and job.attempts == 1
    assert job.checkpoint_step >= 250, "SIGTERM saved no checkpoint at the step it stopped"
    platform.start_worker("b")
    final = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert final["status"] == "succeeded" and final["attempts"] == 2


def test_cancel_running_job_checkpoints_and_ends_within_10_seconds(platform):
    platform.start_scheduler()
    platform.start_worker()
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": {**LONG, "max_steps": 100_000, "checkpoint_interval": 100}})
    wait_checkpoint(platform, job_id, 100)
    step_before = platform.job(job_id)["step"]
    asked = time.monotonic()
    assert platform.api("POST", f"/jobs/{job_id}/cancel").status_code == 202
    job = platform.wait_status(job_id, ("cancelled", "succeeded", "failed"), timeout=10)
    assert job["status"] == "cancelled" and time.monotonic() - asked < 10
    assert row(platform, job_id).checkpoint_step >= step_before
    artifacts = platform.api("GET", f"/jobs/{job_id}/artifacts").json()["artifacts"]
    assert any(a["kind"] == "checkpoint" for a in artifacts)
    # The run is not lost with the cancel: its checkpoint generates.
    gen = platform.submit({"type": "generate", "source_job": job_id, "prompts": ["def "],
                           "params": {"max_new_tokens": 8}})
    done = platform.wait_status(gen, ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done["error"]


def test_cancel_queued_job_is_immediate(platform):
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": LONG})
    assert platform.api("POST", f"/jobs/{job_id}/cancel").status_code == 202
    assert platform.job(job_id)["status"] == "cancelled"


def test_duplicate_delivery_and_short_visibility_timeout_run_the_job_once(platform):
    platform.env["GENQ_VISIBILITY_TIMEOUT"] = "1"  # shorter than the job: Redis would redeliver an unacked message
    platform.start_scheduler()
    platform.start_worker("a")
    platform.start_worker("b")
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": {**LONG, "max_steps": 600}})
    platform.wait_for(lambda: row(platform, job_id).status == "running", 60, "the job to start")
    celery = make_celery(platform.env["GENQ_REDIS_URL"])
    for _ in range(2):  # the same message again, twice, while the job runs
        celery.send_task(TASK_NAME, args=[job_id], queue="gpu.default")
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert len(started_lines(platform, job_id)) == 1
    steps = loss_steps(platform, job_id)
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "some steps ran twice"
    assert "message dropped" in platform.logs()


def test_redis_killed_with_jobs_queued_and_restarted_empty(platform):
    redis_server = EmbeddedRedis.start(data_dir=None)
    platform.env["GENQ_REDIS_URL"] = redis_server.url
    try:
        worker = platform.start_worker()
        platform.wait_for(lambda: platform.api("GET", "/workers").json()["workers"], 60, "the worker to register")
        os.killpg(worker.pid, signal.SIGSTOP)  # frozen: messages sent to it stay queued in Redis
        platform.start_scheduler()
        jobs = [platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                                 "params": tiny_gpt(max_steps=100)}) for _ in range(3)]
        client = redis.Redis.from_url(redis_server.url)
        platform.wait_for(lambda: client.llen("gpu.default") >= 1, 30, "a message queued in Redis")
        redis_server.stop(kill=True)  # the queued message is gone with it
        redis_server = EmbeddedRedis.start(data_dir=None, port=redis_server.port)
        assert client.llen("gpu.default") == 0
        os.killpg(worker.pid, signal.SIGCONT)
        for job_id in jobs:
            job = platform.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
            assert job["status"] == "succeeded", job["error"]
            assert job["attempts"] == 1
    finally:
        redis_server.stop()


def test_database_connections_dropped_mid_job_are_survived(platform, database_url):
    """PostgreSQL only: every connection to the database is terminated, as a server restart would."""
    # only the SQLite variant skips: any GENQ_TEST_DATABASE_URL runs it, and fails if it cannot drop connections
    if database_url.startswith("sqlite"):
        pytest.skip("connection loss is a PostgreSQL scenario: it runs when GENQ_TEST_DATABASE_URL is set")
    processes = {"genq-web", "genq-scheduler", "genq-worker"}  # PGAPPNAME of each (tests/worker/platform.py)

    def connected() -> set[str]:
        with platform.db.engine.connect() as conn:
            return set(conn.scalars(text("SELECT application_name FROM pg_stat_activity "
                                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")))

    scheduler = platform.start_scheduler()
    worker = platform.start_worker()
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": {**LONG, "max_steps": 600, "checkpoint_interval": 100}})
    wait_checkpoint(platform, job_id, 100)
    with platform.db.engine.connect() as conn:
        # pg_terminate_backend in the select list, not the WHERE clause: it must only see this database's rows
        rows = conn.execute(text("SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all()
    dropped = {name for name, terminated in rows if terminated}
    # a process that held no connection, or one that could not be terminated, would prove nothing about it
    assert processes <= dropped, f"terminated {sorted(dropped)} of {rows}"
    assert row(platform, job_id).status == "running"  # dropped mid-job, not after it

    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert platform.api("GET", "/jobs").status_code == 200  # the web reconnected too
    assert scheduler.poll() is None and worker.poll() is None, platform.logs()
    platform.wait_for(lambda: processes <= connected(), 30, "the web, scheduler and worker to reconnect")
