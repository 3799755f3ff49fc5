"""What the worker and the scheduler publish for live pages, against a real database and a real Redis: events
follow committed rows only, and device utilisation reaches the worker row only where NVML reads it."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import types
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from genq.db import Job, JobLog, Worker, utcnow
from genq.events import job_channel, team_channel
from genq.store import LocalStore
from genq.worker.artifacts import JobFiles
from genq.worker.devices import detect_devices, device_usage
from genq.worker.heartbeat import Heartbeat
from genq.worker.hooks import JobHooks, LeaseLost
from genq.worker.scheduler import Scheduler
from tests.worker.test_scheduler import add_jobs


@pytest.fixture
def listen(redis_url):
    """listen(channel) -> a function returning the messages published there since."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    subscriptions = []

    def subscribe(*channels: str):
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*channels)
        subscriptions.append(pubsub)

        def received(wait: float = 1.0) -> list[dict]:
            out, deadline = [], time.monotonic() + wait
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.1)
                if message:
                    out.append({"channel": message["channel"].decode(), **json.loads(message["data"])})
            return out
        return received
    yield subscribe
    for pubsub in subscriptions:
        pubsub.close()


def local_files(folder, job_id: int) -> JobFiles:
    """A run's files kept in `folder`, which is also the store."""
    return JobFiles(LocalStore(folder), folder, f"jobs/{job_id}")


def test_a_flush_publishes_after_its_commit_and_a_lost_lease_publishes_nothing(db, tmp_path):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="me")
    published: list[list] = []

    def publish(events, wake=False):
        with db.session() as s:  # the rows are there by the time the events go out
            assert s.get(Job, job_id).step == 20
        published.append(events)

    hooks = JobHooks(db, job_id, "me", local_files(tmp_path, job_id), stop_reason=lambda: None,
                     flush_every=float("inf"),
                     publish=publish)
    hooks.metrics(10, {"train/loss": 2.0})
    hooks.metrics(20, {"train/loss": 1.5, "val/loss": float("inf")})
    hooks.progress(20, 100)
    hooks.log("step 20")
    hooks.flush()
    assert published == [[("progress", {"step": 20, "progress": 0.2}),
                          ("metrics", {"series": {"train/loss": [[10, 2.0], [20, 1.5]], "val/loss": [[20, None]]}}),
                          ("log", {"count": 1})]]

    with db.session() as s:
        s.get(Job, job_id).worker_id = "someone-else"
    hooks.metrics(30, {"train/loss": 1.0})
    with pytest.raises(LeaseLost):
        hooks.flush()
    assert len(published) == 1


def test_a_gallery_publishes_its_outputs_once_they_are_rows(db, tmp_path):
    from genq.core.api import Sample
    from genq.db import Output

    (job_id,) = add_jobs(db, 1, status="running", worker_id="me")
    published: list[list] = []

    def publish(events, wake=False):
        with db.session() as s:
            assert len(s.scalars(select(Output).where(Output.job_id == job_id, Output.step == 100)).all()) == 2
        published.append(events)

    hooks = JobHooks(db, job_id, "me", local_files(tmp_path, job_id), stop_reason=lambda: None, publish=publish)
    hooks.samples(100, [Sample(kind="text", text="a"), Sample(kind="text", text="b")])
    assert published == [[("outputs", {"count": 2, "step": 100})]]


def test_the_worker_publishes_the_end_with_its_outputs(db, settings, redis_url, listen):
    from genq.core.api import Sample
    from genq.worker.runner import WorkerContext

    (job_id,) = add_jobs(db, 1, status="queued")
    with db.session() as s:
        team = s.get(Job, job_id).team_id
    received = listen(job_channel(job_id), team_channel(team))
    worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url), "default")
    job = worker.claim(job_id)
    hooks = worker.hooks(job)
    hooks.progress(2, 2)  # still buffered when the job ends: it goes out with the end, in its transaction
    hooks.log("last line")
    worker._finish(job, hooks, None, [Sample(kind="text", text="a"), Sample(kind="text", text="b")])
    with db.session() as s:
        assert [m for (m,) in s.execute(select(JobLog.message).where(JobLog.job_id == job_id))][1:] == \
            ["last line", "succeeded"]
    messages = received()
    on_job = [(m["event"], m["data"]) for m in messages if m["channel"] == job_channel(job_id)]
    on_team = [(m["event"], m["data"]) for m in messages if m["channel"] == team_channel(team)]
    assert on_job == [("progress", {"progress": 1.0}), ("log", {"count": 1}), ("outputs", {"count": 2}),
                      ("status", {"status": "succeeded"})]
    assert on_team == [("progress", {"progress": 1.0}), ("status", {"status": "succeeded"})]  # no outputs there
    worker.db.dispose()


def test_the_reconciler_publishes_the_jobs_it_requeues_or_fails(db, settings, redis_url, listen):
    past = utcnow() - timedelta(seconds=5)
    (retry,) = add_jobs(db, 1, status="running", worker_id="dead", attempts=1, lease_expires_at=past)
    (spent,) = add_jobs(db, 1, status="running", worker_id="dead", attempts=3, max_attempts=3, lease_expires_at=past)
    received = listen(job_channel(retry), job_channel(spent))
    scheduler = Scheduler(settings, redis_url)
    scheduler.reconcile()
    got = {(m["job"], m["data"]["status"]) for m in received()}
    assert got == {(retry, "queued"), (spent, "failed")}
    scheduler.db.dispose()


def test_a_cpu_worker_reports_no_device_utilisation(db):
    devices = detect_devices()
    assert devices[0]["kind"] == "cpu" and device_usage(devices) is None
    with db.session() as s:
        s.add(Worker(id="cpu-worker", hostname="h", devices=devices))
    Heartbeat(db, "cpu-worker", 30, usage=device_usage(devices)).beat()
    with db.session() as s:
        assert s.get(Worker, "cpu-worker").devices == devices  # no made-up numbers


def test_a_gpu_worker_reports_nvml_utilisation_in_its_heartbeat(db, monkeypatch):
    # No GPU here: a stand-in for the NVML bindings, answering for the one device the worker was given.
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: {"GPU-abc": "handle"}[uuid],
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    devices = [{"kind": "cuda", "name": "H100", "memory_bytes": 80 * 2**30, "visible_id": "2", "uuid": "GPU-abc"}]
    with db.session() as s:
        s.add(Worker(id="gpu-worker", hostname="h", devices=devices))
    Heartbeat(db, "gpu-worker", 30, usage=device_usage(devices)).beat()
    with db.session() as s:
        (stored,) = s.scalars(select(Worker.devices).where(Worker.id == "gpu-worker")).one()
    assert stored == {**devices[0], "utilization": 0.87, "memory_used_bytes": 3 * 2**30}

    def broken():
        raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken))
    assert device_usage(devices) is None  # no driver: nothing reported, the worker runs on
