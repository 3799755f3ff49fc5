"""Batch generation through the real platform: rows streamed to the database as they finish, a SIGKILLed
worker's job resumed elsewhere with every row stored exactly once, bad rows reported by number, paging, the
output files, and a retry of rows that failed on their input refused."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal

from sqlalchemy import select

from genq.db import Job, Output
from tests.worker.platform import tiny_gpt

ROWS, BAD = 150, {5: "it has no prompt", 77: '"top_p" must be'}
LONG_PROMPT = 10  # a prompt longer than the model's 32-token context


def prompts_file() -> bytes:
    rnd = random.Random(0)
    lines = []
    for i in range(ROWS):
        row = {"id": f"p{i}", "prompt": "ROMEO: " * (20 if i == LONG_PROMPT else 1) + str(i),
               "max_new_tokens": rnd.randint(1000, 3000)}  # long enough that the job is still running at row 20
        if i == 5:
            del row["prompt"]
        if i == 77:
            row["top_p"] = 3
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def stored(platform, job_id: int) -> list[Output]:
    with platform.db.session() as s:
        return list(s.scalars(select(Output).where(Output.job_id == job_id).order_by(Output.row)))


def test_sigkilled_worker_resumes_batch_with_every_row_once(platform):
    platform.start_scheduler()
    first = platform.start_worker("a")
    source = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                              "params": tiny_gpt(max_steps=20, block_size=32)})
    assert platform.wait_status(source, ("succeeded", "failed"), timeout=180)["status"] == "succeeded"
    upload = platform.api("POST", "/datasets", files={"file": ("rows.jsonl", prompts_file())})
    assert upload.status_code == 201, upload.text
    assert upload.json()["info"]["bad_rows"] == 2
    job_id = platform.submit({"type": "generate", "source_job": source, "dataset": upload.json()["id"],
                              "params": {"batch_size": 2, "seed": 3}})

    # Rows reach the database while the job runs; kill the worker part-way.
    platform.wait_for(lambda: platform.job(job_id)["rows_done"] >= 20, 180, "20 rows stored")
    os.killpg(first.pid, signal.SIGSTOP)
    before = {o.row: o.text for o in stored(platform, job_id)}
    running = platform.job(job_id)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert running["status"] == "running" and 20 <= len(before) < ROWS, len(before)
    assert running["rows_total"] == ROWS and running["eta"] is not None

    platform.start_worker("b")
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (ROWS, ROWS, len(BAD))

    outputs = stored(platform, job_id)
    assert [o.row for o in outputs] == list(range(ROWS))  # every row, exactly once
    assert all(before[o.row] == o.text for o in outputs if o.row in before)  # the first attempt's rows stayed
    for o in outputs:
        assert o.row_id == f"p{o.row}"
        if o.row in BAD:
            assert o.status == "error" and f"row {o.row} (line {o.row + 1})" in o.error and BAD[o.row] in o.error
        else:
            assert o.status == "ok" and o.text.startswith(o.prompt) and len(o.text) > len(o.prompt)
    assert "truncated from the left" in outputs[LONG_PROMPT].error
    with platform.db.session() as s:
        assert s.get(Job, job_id).eta_at is not None

    # Paging by row, then the two files, in input order.
    rows, after = [], -1
    while after is not None:
        page = platform.api("GET", f"/jobs/{job_id}/outputs?after={after}&limit=60").json()
        assert len(page["outputs"]) <= 60
        rows += [o["row"] for o in page["outputs"]]
        after = page["next"]
    assert rows == list(range(ROWS))
    artifacts = {a["name"]: a for a in platform.api("GET", f"/jobs/{job_id}/artifacts").json()["artifacts"]}
    lines = [json.loads(line) for line in download(platform, artifacts["outputs.jsonl"]).splitlines()]
    assert [(line["row"], line["row_id"]) for line in lines] == [(i, f"p{i}") for i in range(ROWS)]
    table = list(csv.DictReader(io.StringIO(download(platform, artifacts["outputs.csv"]))))
    assert [r["row_id"] for r in table] == [f"p{i}" for i in range(ROWS)] and table[3]["text"] == lines[3]["text"]

    # A retry of the failed rows: they failed on their input, and would again: refused, saying why.
    assert platform.api("POST", f"/jobs/{job_id}/retry", json={"only": 1}).status_code == 422
    answer = platform.api("POST", f"/jobs/{job_id}/retry", json={"only_failed": True})
    assert answer.status_code == 409, answer.text
    assert "failed on its input" in answer.json()["message"] and "row 5 (line 6): it has no prompt" in answer.text


def download(platform, artifact: dict) -> str:
    response = platform.api("GET", f"/artifacts/{artifact['id']}/download")
    assert response.status_code == 200, response.text
    return response.text
