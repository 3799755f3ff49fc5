"""Dispatch through the real platform: jobs reach idle workers on wakes from the web and the workers, not on
the scheduler's tick; a burst runs every job exactly once; with the web's wakes lost, the tick dispatches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis
from sqlalchemy import func, select

from genq.db import Job, JobLog, Output, Worker
from genq.events import WAKE_KEY
from genq.redis_server import free_port
from tests.worker.platform import tiny_gpt


def online_workers(platform) -> int:
    with platform.db.session() as s:
        return s.scalar(select(func.count()).select_from(Worker).where(Worker.status == "online"))


def train_tiny(platform) -> int:
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": tiny_gpt(max_steps=20)})
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=120)
    assert job["status"] == "succeeded", job["error"]
    return job_id


def test_jobs_reach_idle_workers_on_wakes_and_a_burst_runs_each_job_once(platform):
    platform.start_worker("cpu0")
    platform.start_worker("cpu1")
    platform.wait_for(lambda: online_workers(platform) == 2, 60, "two workers online")
    # One tick when it starts, the next in an hour: every job below waits for a wake (a submission, a worker
    # ending a job), or for ever.
    platform.start_scheduler(interval=3600)
    source = train_tiny(platform)

    body = {"type": "generate", "source_job": source, "prompts": ["The "],
            "params": {"num_samples": 2, "max_new_tokens": 5}}
    with ThreadPoolExecutor(4) as pool:
        burst = list(pool.map(lambda _: platform.submit(body), range(24)))
    platform.wait_for(lambda: all(platform.job(j)["status"] == "succeeded" for j in burst), 180,
                      "the burst to succeed on two workers")

    with platform.db.session() as s:
        attempts = dict(s.execute(select(Job.id, Job.attempts).where(Job.id.in_(burst))).all())
        claims = dict(s.execute(select(JobLog.job_id, func.count()).where(
            JobLog.job_id.in_(burst), JobLog.message.like("attempt % started on %")).group_by(JobLog.job_id)).all())
        outputs = dict(s.execute(select(Output.job_id, func.count()).where(Output.job_id.in_(burst))
                                 .group_by(Output.job_id)).all())
        workers = set(s.scalars(select(JobLog.message).where(JobLog.job_id.in_(burst),
                                                              JobLog.message.like("attempt %"))))
    assert attempts == dict.fromkeys(burst, 1)
    assert claims == dict.fromkeys(burst, 1), "a job was claimed twice"
    assert outputs == dict.fromkeys(burst, 2), "a job recorded its outputs twice"
    assert len({line.split(" on ")[1] for line in workers}) == 2, "both workers took jobs"


def test_with_the_webs_wakes_lost_the_tick_still_dispatches(platform, redis_url):
    platform.start_worker()
    platform.wait_for(lambda: online_workers(platform) == 1, 60, "the worker online")
    platform.start_scheduler(interval=1.0)
    # The worker's start-up wake consumed: from here on nothing wakes the scheduler before the job has run.
    platform.wait_for(lambda: redis.Redis.from_url(redis_url).llen(WAKE_KEY) == 0, 30, "the scheduler to take its wake")
    platform.start_web(GENQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # its wakes and events go nowhere
    train_tiny(platform)
