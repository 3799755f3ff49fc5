"""Metric block summaries (genq.metrics): a worker's flushes keep them in step with the points, the migration
that adds them fills them for points recorded before it, and the bucket width honours the point budget."""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, text

from genq.db import Database, Metric
from genq.db.session import MIGRATIONS
from genq.metrics import MAX_STEP, bucket_width, downsample, latest_points
from genq.store import LocalStore
from genq.worker.artifacts import JobFiles
from genq.worker.hooks import JobHooks
from tests.web.test_api_metrics import brute_force
from tests.worker.test_scheduler import add_jobs


def local_files(folder, job_id: int) -> JobFiles:
    """A run's files kept in `folder`, which is also the store."""
    return JobFiles(LocalStore(folder), folder, f"jobs/{job_id}")


def answer(db, job_id: int, points: int, name: str = "train/loss"):
    with db.session() as s:
        found = downsample(s, job_id, name, 0, MAX_STEP, points)
    return found.points, found.bands, found.bucket


def test_worker_flushes_keep_the_summaries_with_the_latest_value_of_a_resumed_step(db, tmp_path):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="me")
    hooks = JobHooks(db, job_id, "me", local_files(tmp_path, job_id), stop_reason=lambda: None,
                     flush_every=float("inf"))
    for step in range(600):  # two series in each flush, one of them on fewer steps
        hooks.metrics(step, {"train/loss": 1.0 + step, **({"val/loss": 2.0 * step} if step % 40 == 0 else {})})
    hooks.flush()
    for step in range(500, 700):  # the run lost its worker and resumed from the checkpoint at step 500
        hooks.metrics(step, {"train/loss": -float(step), **({"val/loss": 0.5} if step % 40 == 0 else {})})
        if step % 64 == 0:
            hooks.flush()
    hooks.flush()
    truth = {s: 1.0 + s for s in range(500)} | {s: -float(s) for s in range(500, 700)}
    val = {s: 2.0 * s for s in range(0, 500, 40)} | {s: 0.5 for s in range(520, 700, 40)}
    for name, points_of in (("train/loss", truth), ("val/loss", val)):
        for points in (1, 7, 50, 1000):
            series, bands, width = answer(db, job_id, points, name)
            assert (series, bands) == brute_force(points_of, 0, MAX_STEP, width), (name, points)
    with db.session() as s:
        assert latest_points(s, [job_id]) == {job_id: {"train/loss": (699, -699.0), "val/loss": (680, 0.5)}}


def test_a_first_attempts_new_series_are_summarised_as_if_read_back(db, tmp_path):
    """A job's first attempt writes a series' first flush without reading what is stored (there is nothing):
    the summaries are those of a later attempt's flushes of the same points, which read and replace them."""
    first, later = add_jobs(db, 2, status="running", worker_id="me")
    for job_id in (first, later):
        hooks = JobHooks(db, job_id, "me", local_files(tmp_path / str(job_id), job_id), stop_reason=lambda: None,
                         flush_every=float("inf"), first_attempt=job_id == first)
        for step in range(300):
            val = {"val/loss": float("inf") if step == 100 else 0.5 * step} if step % 50 == 0 else {}
            hooks.metrics(step, {"train/loss": float(step), **val})
        for step in (17, 299):  # logged twice: the later value wins
            hooks.metrics(step, {"train/loss": -float(step)})
        hooks.flush()
        hooks.metrics(300, {"train/loss": 3.0, "val/loss": 4.0})  # a second flush: read and refreshed
        hooks.flush()
    with db.session() as s:
        rows = s.execute(text("SELECT job_id, name, level, block, lo, hi, last_step, last_value FROM metric_rollups "
                              "ORDER BY name, level, block")).all()
    of = {job_id: [tuple(r[1:]) for r in rows if r[0] == job_id] for job_id in (first, later)}
    assert of[first] and of[first] == of[later]
    assert (("train/loss", 1, 1, -17.0, 31.0, 31, 31.0) in of[first]), "step 17 counts with its later value"
    assert answer(db, first, 1000)[0][:20] == answer(db, later, 1000)[0][:20]


def test_the_migration_summarises_points_recorded_before_it(database_url):
    db = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
            # A finished job in the schema of 0003 (today's models name columns it does not have yet).
            now = {"now": datetime(2026, 1, 1)}
            connection.execute(text("INSERT INTO teams (name, weight, created_at) VALUES ('t', 1, :now)"), now)
            connection.execute(text(
                "INSERT INTO jobs (team_id, type, model, params, priority, gpus, pool, status, progress, step,"
                " attempts, max_attempts, cancel_requested, created_at, builtin_dataset) SELECT id, 'train', 'gpt',"
                " '{}', 0, 1, 'default', 'succeeded', 1, 0, 1, 3, false, :now, 'pydoc' FROM teams WHERE name = 't'"),
                now)
            job_id = connection.execute(text("SELECT max(id) FROM jobs")).scalar_one()
        truth = {step: (step % 97) / 7.0 for step in range(0, 30_000, 5)}
        rows = [{"job_id": job_id, "name": "train/loss", "step": step, "value": -1.0} for step in range(0, 500, 5)]
        rows += [{"job_id": job_id, "name": "train/loss", "step": step, "value": v} for step, v in truth.items()]
        with db.session() as s:
            s.execute(insert(Metric), rows)  # steps 0..495 twice: the later rows win
        db.upgrade()
        for points in (3, 300):
            series, bands, width = answer(db, job_id, points)
            assert width > 5 and (series, bands) == brute_force(truth, 0, MAX_STEP, width)
    finally:
        db.upgrade()
        db.dispose()


@pytest.mark.parametrize("lo, hi", [(0, 0), (0, 999_999), (5, 6), (12_345, 987_654), (0, MAX_STEP), (7, 23)])
@pytest.mark.parametrize("points", [1, 2, 3, 799, 800, 10_000])
def test_bucket_width_fits_the_budget_in_whole_blocks(lo, hi, points):
    width, level = bucket_width(lo, hi, points)
    assert width % 16**level == 0
    assert hi // width - lo // width + 1 <= points
    if points > 1 and hi - lo + 1 >= 2 * points:  # no coarser than needed: within 2x of the narrowest width
        assert width <= 2 * -(-(hi - lo + 1) // points) + 16**level
