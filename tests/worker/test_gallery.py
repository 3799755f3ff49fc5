"""Samples by step through the worker: JobHooks records each evaluation's gallery with its step (fenced, and
replacing a step drawn again), and real training jobs' galleries come back from the API, step by step."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from genq.core.api import Sample
from genq.db import Artifact, Output
from genq.store import LocalStore
from genq.worker.artifacts import JobFiles
from genq.worker.hooks import JobHooks, LeaseLost
from tests.web.conftest import png
from tests.worker.platform import CORPUS, tiny_gpt
from tests.worker.test_scheduler import add_jobs

ME = "me"


def gallery_rows(db, job_id: int) -> list[tuple]:
    with db.session() as s:
        return s.execute(select(Output.step, Output.index, Output.kind, Output.text, Output.artifact_id)
                         .where(Output.job_id == job_id).order_by(Output.step, Output.index)).all()


def files(settings, job_id: int) -> JobFiles:
    """A run's files as a worker on the store's own host has them: its folder is where the store keeps them."""
    return JobFiles(LocalStore(settings.artifacts), settings.artifacts / "jobs" / str(job_id), f"jobs/{job_id}")


def test_job_hooks_record_samples_with_their_step_and_replace_a_step_drawn_again(db, settings):
    (job_id,) = add_jobs(db, 1, status="running", worker_id=ME)
    hooks = JobHooks(db, job_id, ME, files(settings, job_id), stop_reason=lambda: None)
    grid = settings.artifacts / "jobs" / str(job_id) / "samples" / "step-00000010" / "grid.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(png())
    hooks.samples(10, [Sample(kind="text", text="at ten"), Sample(kind="image", path=grid)])
    hooks.samples(20, [Sample(kind="text", text="at twenty")])
    (ten_text, ten_image, twenty) = gallery_rows(db, job_id)
    assert ten_text[:4] == (10, 0, "text", "at ten") and ten_text[4] is None
    assert twenty[:4] == (20, 0, "text", "at twenty")
    with db.session() as s:
        artifact = s.get(Artifact, ten_image[4])
        assert (artifact.kind, artifact.name, artifact.path, artifact.media_type, artifact.size_bytes) == (
            "gallery", "step-10-grid.png", f"jobs/{job_id}/samples/step-00000010/grid.png", "image/png",
            len(png()))

    # A job resumed from a checkpoint before step 10 evaluates step 10 again: its new gallery replaces the old.
    hooks.samples(10, [Sample(kind="text", text="at ten, again")])
    assert [row[:4] for row in gallery_rows(db, job_id)] == [(10, 0, "text", "at ten, again"),
                                                              (20, 0, "text", "at twenty")]
    with db.session() as s:
        assert s.scalars(select(Artifact.id).where(Artifact.job_id == job_id)).all() == []


def test_a_worker_that_lost_the_job_records_no_samples(db, settings):
    (job_id,) = add_jobs(db, 1, status="running", worker_id="someone-else")
    stale = JobHooks(db, job_id, ME, files(settings, job_id), stop_reason=lambda: None)
    with pytest.raises(LeaseLost):
        stale.samples(10, [Sample(kind="text", text="written after the lease was lost")])
    assert gallery_rows(db, job_id) == []


def test_training_jobs_record_samples_at_every_evaluation_and_the_api_serves_them_by_step(platform):
    dataset = platform.upload_text(CORPUS.read_text())
    platform.start_scheduler()
    platform.start_worker()
    text = platform.submit({"type": "train", "model": "gpt", "dataset": dataset,
                            "params": tiny_gpt(max_steps=60, eval_interval=20)})
    images = platform.submit({"type": "train", "model": "vae", "dataset": "digits",
                              "params": {"z_dim": 4, "base_channels": 4, "batch_size": 16, "max_steps": 4,
                                         "eval_interval": 2, "checkpoint_interval": 2}})
    for job_id in (text, images):
        job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=240)
        assert job["status"] == "succeeded", job["error"]

    def samples(job_id: int, query: str = "") -> dict:
        answer = platform.api("GET", f"/jobs/{job_id}/samples{query}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    latest = samples(text)
    assert latest["steps"] == [20, 40, 60] and latest["step"] == 60
    by_step = {step: samples(text, f"?step={step}")["samples"] for step in latest["steps"]}
    assert by_step[60] == latest["samples"]
    for drawn in by_step.values():
        assert [(s["index"], s["kind"], s["prompt"]) for s in drawn] == [(0, "text", None), (1, "text", None),
                                                                       (2, "text", None)]
        assert all(len(s["text"]) > 50 for s in drawn)
    assert by_step[20] != by_step[60], "the same seed drew the same texts from different weights"
    finals = platform.api("GET", f"/jobs/{text}/outputs").json()["outputs"]
    assert len(finals) == 3 and all(o["text"] not in {s["text"] for s in by_step[60]} for o in finals)

    grids = samples(images)
    assert grids["steps"] == [2, 4]
    (grid,) = samples(images, "?step=2")["samples"]
    assert grid["kind"] == "image" and grid["media_type"] == "image/png"
    downloaded = platform.api("GET", grid["url"].removeprefix("/api/v1"))
    assert downloaded.status_code == 200 and downloaded.content.startswith(b"\x89PNG")
    artifacts = platform.api("GET", f"/jobs/{images}/artifacts").json()["artifacts"]
    assert sorted(a["name"] for a in artifacts if a["kind"] == "gallery") == ["step-2-grid.png", "step-4-grid.png"]
    page = requests.get(f"{platform.url}/jobs/{text}", headers={"Authorization": f"Bearer {platform.token}"},
                        timeout=30)
    assert page.status_code == 200 and "Samples by step" in page.text and 'data-steps=\'[20, 40, 60]\'' in page.text

    # generating images: one prompt row of two samples, counted as a row, in both output files
    drawn = platform.submit({"type": "generate", "source_job": images, "params": {"num_samples": 2}})
    job = platform.wait_status(drawn, ("succeeded", "failed"), timeout=120)
    assert (job["status"], job["rows_total"], job["rows_done"]) == ("succeeded", 1, 1), job["error"]
    outputs = platform.api("GET", f"/jobs/{drawn}/outputs").json()["outputs"]
    assert [(o["row"], o["index"], o["kind"]) for o in outputs] == [(0, 0, "image"), (0, 1, "image")]
    files = {a["name"] for a in platform.api("GET", f"/jobs/{drawn}/artifacts").json()["artifacts"]}
    assert {"outputs.jsonl", "outputs.csv"} <= files


def test_samples_arrive_while_the_job_trains(platform):
    platform.start_scheduler()
    platform.start_worker()
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": tiny_gpt(max_steps=100_000, eval_interval=10, checkpoint_interval=1000)})

    def two_steps_while_running():
        steps = platform.api("GET", f"/jobs/{job_id}/samples").json()["steps"]
        return len(steps) >= 2 and platform.job(job_id)["status"] == "running" and steps
    steps = platform.wait_for(two_steps_while_running, 120, "samples of two evaluations while the job runs")
    assert steps[:2] == [10, 20]
    assert platform.api("POST", f"/jobs/{job_id}/cancel").status_code == 202
    platform.wait_status(job_id, ("cancelled",), timeout=60)
    assert platform.api("GET", f"/jobs/{job_id}/samples").json()["steps"][:2] == [10, 20]  # they stay
