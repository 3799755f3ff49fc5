"""JobHooks for batch generation: finished rows stored in fenced flushes with the job's counts, progress and
ETA, the output files rewritten as rows arrive, and nothing written by a worker that lost the job."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from genq.core.api import RowResult
from genq.db import Artifact, Job, Output
from genq.worker.artifacts import JobFiles
from genq.worker.hooks import JobHooks, LeaseLost, RowCounts
from tests.worker.test_scheduler import add_jobs

ME = "me"


def files(settings, job_id: int) -> JobFiles:
    """The first attempt's folder and store prefix, in the settings' folder store."""
    return JobFiles(settings.store(), settings.home / "work" / f"jobs/{job_id}/a1", f"jobs/{job_id}/a1")


def test_rows_are_stored_with_counts_and_the_files_follow(db, settings):
    (job_id,) = add_jobs(db, 1, status="running", worker_id=ME)
    hooks = JobHooks(db, job_id, ME, files(settings, job_id), stop_reason=lambda: None)
    hooks.batch = RowCounts(total=4, done=0)
    hooks.rows([RowResult(2, 2, "b", "b!", row_id="r2"), RowResult(0, 0, None, None, "error", "row 0: bad")])
    hooks.flush()
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.rows_done, job.rows_failed, job.progress) == (2, 1, 0.5) and job.eta_at is not None
        assert s.scalars(select(Artifact).where(Artifact.job_id == job_id)).all() == []  # not due yet
    hooks.batch.files_at -= 60  # as if the last files were written a minute ago
    hooks.rows([RowResult(1, 1, "a", "a!")])
    hooks.flush()
    with db.session() as s:
        assert s.get(Job, job_id).rows_done == 3
        stored = {a.name: settings.artifacts / a.path for a in s.scalars(select(Artifact).where(
            Artifact.job_id == job_id))}
    assert set(stored) == {"outputs.jsonl", "outputs.csv"}  # in the store, where the API serves them from
    lines = [json.loads(line) for line in stored["outputs.jsonl"].read_text().splitlines()]
    assert [(r["row"], r["status"], r["row_id"]) for r in lines] == [(0, "error", None), (1, "ok", None),
                                                                     (2, "ok", "r2")]
    assert stored["outputs.csv"].read_text().startswith("row,row_id,")


def test_a_worker_that_lost_the_job_stores_no_rows(db, settings):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="someone-else")
    stale = JobHooks(db, job_id, ME, files(settings, job_id), stop_reason=lambda: None)
    stale.batch = RowCounts(total=1, done=0)
    stale.rows([RowResult(0, 0, "a", "a!")])
    with pytest.raises(LeaseLost):
        stale.flush()
    with db.session() as s:
        assert s.scalars(select(Output).where(Output.job_id == job_id)).all() == []


def test_no_eta_from_a_large_jobs_first_rows():
    counts = RowCounts(total=3000, done=100)  # a resumed job: its own rows count, not the first attempt's
    assert counts.after([RowResult(100, 100, "a", "a!")])["eta_at"] is None
    assert counts.after([RowResult(r, r, "a", "a!") for r in range(101, 149)])["eta_at"] is None
    assert counts.after([RowResult(149, 149, "a", "a!")])["eta_at"] is not None  # 50 rows of this attempt


def test_finished_rows_are_stored_while_a_long_row_still_decodes(db, settings):
    # no row finishes after these two for a while: the decoder's stop checks are what flush them
    (job_id,) = add_jobs(db, 1, status="running", worker_id=ME)
    hooks = JobHooks(db, job_id, ME, files(settings, job_id), stop_reason=lambda: None, flush_every=0.05)
    hooks.batch = RowCounts(total=3, done=0)
    hooks.rows([RowResult(1, 1, "a", "a!"), RowResult(2, 2, "b", "b!")])  # within flush_every of the start
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert hooks.stop_requested() is None
        with db.session() as s:
            if s.get(Job, job_id).rows_done == 2:
                break
        time.sleep(0.02)
    with db.session() as s:
        assert s.get(Job, job_id).rows_done == 2
        assert len(s.scalars(select(Output).where(Output.job_id == job_id)).all()) == 2
    hooks.flush()
