"""A worker's writes and flags belong to the job they were made for: a job it no longer holds gets nothing
from it, and the next job it runs is not stopped by what it learned about the last one."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import select

from genq.db import Job, JobLog
from genq.store import LocalStore
from genq.worker.artifacts import JobFiles
from genq.worker.heartbeat import Heartbeat
from genq.worker.hooks import JobHooks, LeaseLost
from tests.worker.test_scheduler import add_jobs

ME = "me"


class CommitThen:
    """A Database whose sessions run `then()` right after they commit: a deterministic interleaving."""

    def __init__(self, db, then):
        self.db, self.then = db, then

    @contextmanager
    def session(self):
        with self.db.session() as s:
            yield s
        self.then()


@pytest.mark.parametrize("ended", [
    dict(status="succeeded"),  # the lease renewal fails: lost
    dict(status="running", worker_id=ME, cancel_requested=True),  # the renewal reads a cancel request
], ids=["lost", "cancel"])
def test_a_heartbeat_for_the_last_job_does_not_stop_the_next(db, ended):
    (a,) = add_jobs(db, 1, **ended)
    (b,) = add_jobs(db, 1, status="running", worker_id=ME)
    heartbeat = Heartbeat(db, ME, lease_seconds=30)
    heartbeat.watch(a)
    heartbeat.beat()
    assert heartbeat.lost.is_set() or heartbeat.cancel.is_set(), "the flag is raised for the job it is about"
    # Job A ends and B is claimed while a beat for A is in flight: its answer about A must not land on B.
    heartbeat.watch(a)
    heartbeat.db = CommitThen(db, lambda: heartbeat.watch(b))
    heartbeat.beat()
    assert heartbeat.job_id == b
    assert not heartbeat.lost.is_set() and not heartbeat.cancel.is_set()


def test_a_worker_that_lost_the_job_writes_no_log_line(db, tmp_path):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="someone-else")

    def hooks(worker_id: str) -> JobHooks:
        files = JobFiles(LocalStore(tmp_path), tmp_path / "work", f"jobs/{job_id}")
        return JobHooks(db, job_id, worker_id, files, stop_reason=lambda: None, flush_every=float("inf"))

    stale = hooks(ME)
    stale.log("written after the lease was lost")
    with pytest.raises(LeaseLost):
        stale.flush()
    owner = hooks("someone-else")
    owner.log("written by the worker that holds the job")
    owner.flush()
    with db.session() as s:
        assert list(s.scalars(select(JobLog.message).where(JobLog.job_id == job_id))) == \
            ["written by the worker that holds the job"]
        assert s.get(Job, job_id).status == "running"


@pytest.mark.parametrize("stopped", [None, "shutdown"], ids=["finished", "shutting-down"])
def test_a_worker_that_lost_the_job_records_no_outputs_and_no_end(db, settings, stopped):
    from genq.core.api import Sample
    from genq.db import Output
    from genq.worker.runner import WorkerContext

    (job_id,) = add_jobs(db, 1, status="running", worker_id="someone-else")
    worker = WorkerContext(settings, "default")
    with db.session() as s:
        job = s.get(Job, job_id)
    hooks = worker.hooks(job)
    hooks.log("buffered by the worker that lost the job")  # it would go out with the end
    with pytest.raises(LeaseLost):
        worker._finish(job, hooks, stopped, [Sample(kind="text", text="late")])
    with db.session() as s:
        assert s.scalars(select(Output).where(Output.job_id == job_id)).all() == []
        assert s.scalars(select(JobLog).where(JobLog.job_id == job_id)).all() == []
        assert (s.get(Job, job_id).status, s.get(Job, job_id).worker_id) == ("running", "someone-else")


def test_timed_writes_run_in_the_background_and_a_lost_lease_reaches_the_job(db, tmp_path):
    (job_id,) = add_jobs(db, 1, status="running", worker_id=ME)
    files = JobFiles(LocalStore(tmp_path), tmp_path / "work", f"jobs/{job_id}")
    hooks = JobHooks(db, job_id, ME, files, stop_reason=lambda: None, flush_every=0.0)
    hooks.metrics(10, {"train/loss": 2.5})  # due at once: handed to the background thread
    writer = hooks._writing
    assert writer is not None and writer.name == f"job-{job_id}-writes"
    writer.join(30)
    with db.session() as s:
        assert s.get(Job, job_id).step == 10  # written without the job's thread waiting for it
    with db.session() as s:
        s.get(Job, job_id).worker_id = "someone-else"
    hooks.log("written after the lease was lost")  # its background write finds the job taken
    hooks._writing.join(30)
    with pytest.raises(LeaseLost):
        hooks.progress(11, 20)  # the job's thread learns it at its next report
    with db.session() as s:
        assert list(s.scalars(select(JobLog.message).where(JobLog.job_id == job_id))) == []
