"""Generating images and audio through the real platform, row by row as text is: a prompts file's rows keep
their ids, its bad rows are stored as error rows, and the output files list both; a cancelled job keeps and
counts the whole rows it finished, and its progress moves while a long clip decodes; a retry runs only the rows
it lacks."""

from __future__ import annotations

import json

from sqlalchemy import select

from genq.db import Output

PROMPTS = 6


def stored(platform, job_id: int) -> list[tuple]:
    with platform.db.session() as s:
        return s.execute(select(Output.row, Output.index, Output.row_id, Output.kind, Output.status, Output.error,
                                Output.artifact_id.is_not(None))
                         .where(Output.job_id == job_id).order_by(Output.index)).all()


def finished(platform, job_id: int) -> dict:
    job = platform.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_images_from_a_prompts_file_keep_row_ids_and_store_bad_rows_as_errors(platform):
    platform.start_scheduler()
    platform.start_worker()
    vae = finished(platform, platform.submit({"type": "train", "model": "vae", "dataset": "digits", "params": {
        "z_dim": 4, "base_channels": 4, "batch_size": 16, "max_steps": 2, "eval_interval": 2,
        "checkpoint_interval": 2}}))["id"]
    body = b"id,prompt\nq1,seven\nq2,\nq3,a handwritten three\n"
    dataset = platform.api("POST", "/datasets", files={"file": ("rows.csv", body)}).json()["id"]
    job = finished(platform, platform.submit({"type": "generate", "source_job": vae, "dataset": dataset,
                                              "params": {"num_samples": 2}}))
    first = job["id"]
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (3, 3, 1)
    assert stored(platform, job["id"]) == [
        (0, 0, "q1", "image", "ok", None, True), (0, 1, "q1", "image", "ok", None, True),
        (1, 2, "q2", "image", "error", "row 1 (line 3): its prompt is empty", False),
        (2, 4, "q3", "image", "ok", None, True), (2, 5, "q3", "image", "ok", None, True)]
    files = {a["name"]: a for a in platform.api("GET", f"/jobs/{job['id']}/artifacts").json()["artifacts"]}
    lines = [json.loads(line) for line in platform.api(
        "GET", f"/artifacts/{files['outputs.jsonl']['id']}/download").text.splitlines()]
    assert [(x["row"], x["row_id"], x["index"], x["status"], bool(x["file"])) for x in lines] == [
        (0, "q1", 0, "ok", True), (0, "q1", 1, "ok", True), (1, "q2", 2, "error", False), (2, "q3", 4, "ok", True),
        (2, "q3", 5, "ok", True)]

    # Per-row params are a text model's: the rows are drawn with the job's, and the log says so.
    rows = b'{"prompt": "one", "seed": 4}\n{"prompt": "two"}\n'
    dataset = platform.api("POST", "/datasets", files={"file": ("rows.jsonl", rows)}).json()["id"]
    job = finished(platform, platform.submit({"type": "generate", "source_job": vae, "dataset": dataset}))
    assert (job["rows_done"], job["rows_failed"]) == (2, 0)
    logs = [line["message"] for line in platform.api("GET", f"/jobs/{job['id']}/logs").json()["logs"]]
    assert any("per-row params (seed) are for text models" in line for line in logs), logs

    # A retry of the failed rows: the bad row alone, which would fail again on its input: refused, saying why.
    answer = platform.api("POST", f"/jobs/{first}/retry", json={"only_failed": True})
    assert answer.status_code == 409 and "row 1 (line 3): its prompt is empty" in answer.json()["message"], answer.text


def test_a_prompt_naming_no_class_fails_its_row_alone(platform):
    """A class-conditional model's unknown classes are found before anything is drawn: their rows are error rows
    and the other rows are drawn (the whole job failed, and no row was stored)."""
    platform.start_scheduler()
    platform.start_worker()
    dcgan = finished(platform, platform.submit({"type": "train", "model": "dcgan", "dataset": "digits", "params": {
        "conditional": "class", "z_dim": 4, "base_channels": 4, "batch_size": 8, "max_steps": 2, "eval_interval": 2,
        "checkpoint_interval": 2}}))["id"]
    job = finished(platform, platform.submit({"type": "generate", "source_job": dcgan,
                                              "prompts": ["7", "eleven", "seven", "a handwritten seven"]}))
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (4, 4, 2)
    rows = stored(platform, job["id"])
    assert [(row, status) for row, _, _, _, status, _, _ in rows] == [(0, "ok"), (1, "error"), (2, "ok"), (3, "error")]
    assert rows[1][5].startswith("row 1: the prompt 'eleven' names no class of this model (classes: 0, 1, ")
    none = platform.submit({"type": "generate", "source_job": dcgan, "prompts": ["eleven"]})
    none = platform.wait_status(none, ("succeeded", "failed"), timeout=120)
    assert none["status"] == "failed" and none["error"].startswith("no row succeeded; the first: row 0: the prompt")


def test_a_cancelled_audio_job_keeps_and_counts_its_whole_rows_and_a_retry_runs_the_rest(platform):
    platform.start_scheduler()
    platform.start_worker()
    train = finished(platform, platform.submit({"type": "train", "model": "wavenet", "dataset": "tones", "params": {
        "n_layers": 4, "residual_channels": 8, "segment_length": 128, "batch_size": 4, "max_steps": 2,
        "eval_interval": 2, "checkpoint_interval": 2, "conditional": True}}))["id"]

    # 6 notes of 4 s clips (32,000 samples each): seconds per prompt on a CPU
    gen = platform.submit({"type": "generate", "source_job": train, "prompts": ["A4", "C4", "e5"] * 2,
                           "params": {"num_samples": 1, "seconds": 4.0}})
    platform.wait_for(lambda: 0 < platform.job(gen)["progress"] < 1 / PROMPTS, 120,
                      "progress within the first prompt")
    platform.wait_for(lambda: platform.job(gen)["progress"] >= 1 / PROMPTS, 120, "the first prompt decoded")
    assert platform.api("POST", f"/jobs/{gen}/cancel").status_code in (200, 202)
    job = platform.wait_status(gen, ("cancelled", "succeeded", "failed"), timeout=120)
    kept = stored(platform, gen)
    assert job["status"] == "cancelled" and 1 <= len(kept) < PROMPTS, (job, kept)
    assert [(row, index, kind, status) for row, index, _, kind, status, _, _ in kept] == [
        (row, row, "audio", "ok") for row in range(len(kept))]
    assert (job["rows_total"], job["rows_done"]) == (PROMPTS, len(kept))
    listed = platform.api("GET", f"/jobs/{gen}/outputs").json()["outputs"]
    assert [o["row"] for o in listed] == list(range(len(kept)))

    # The retry runs the rows the cancel left, numbered as in the first job.
    answer = platform.api("POST", f"/jobs/{gen}/retry", json={"only_failed": True})
    assert answer.status_code == 201 and answer.json()["rows_total"] == PROMPTS - len(kept), answer.text
    retry = finished(platform, answer.json()["id"])
    assert retry["rows_done"] == PROMPTS - len(kept)
    assert [row for row, *_ in stored(platform, retry["id"])] == list(range(len(kept), PROMPTS))
