"""hf-causal-lm batch generation through the real platform, as gpt and gru do it (tests/worker/test_batch_generation):
from a prompts file, bad rows stored as error rows by number (with their prompt where it was fine), each row with
its own seed, max_new_tokens and stop strings whatever ran beside it, rows streamed as they finish (a cancelled
job keeps them), the two files, and a retry of rows that failed on their input refused; from a fine-tuned job
and from a base directly."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from sqlalchemy import select

from genq.db import Output
from tests.worker.platform import CORPUS


@pytest.fixture
def hf_platform(platform, settings, tiny_gpt2, tmp_path):
    """The platform with the tiny GPT-2 as base "tiny", offline, scheduler and one worker running."""
    shutil.copytree(tiny_gpt2, settings.models_folder / "tiny")
    platform.env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    platform.start_scheduler()
    platform.start_worker()
    return platform


def upload(platform, lines: list[dict], name: str = "rows.jsonl") -> int:
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    answer = platform.api("POST", "/datasets", files={"file": (name, body)})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def stored(platform, job_id: int) -> list[Output]:
    with platform.db.session() as s:
        return list(s.scalars(select(Output).where(Output.job_id == job_id).order_by(Output.row, Output.index)))


def finished(platform, job_id: int) -> dict:
    job = platform.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    return job


ROWS = [
    {"id": "a", "prompt": "ROMEO:", "seed": 11, "max_new_tokens": 24},
    {"id": "b", "prompt": "JULIET: good night", "max_new_tokens": 6},
    {"id": "c"},  # no prompt
    {"id": "d", "prompt": "ROMEO:", "seed": 11, "max_new_tokens": 24},  # row 0's prompt and seed: its text
    {"id": "e", "prompt": "Kept prompt", "top_p": 3},  # a bad param: an error row that keeps its prompt
    {"id": "f", "prompt": "ROMEO:", "seed": 11, "max_new_tokens": 5},  # row 0's first tokens
    {"id": "g", "prompt": "to be " * 60, "max_new_tokens": 4},  # past the 64-token window: cut from the left
]


def test_base_rows_follow_the_batch_generation_contract(hf_platform):
    platform = hf_platform
    dataset = upload(platform, ROWS)
    job_id = platform.submit({"type": "generate", "base": "tiny", "dataset": dataset,
                              "params": {"seed": 5, "num_samples": 1}})
    job = finished(platform, job_id)
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (7, 7, 2)
    out = {o.row: o for o in stored(platform, job_id)}
    assert sorted(out) == list(range(7)) and [out[r].row_id for r in range(7)] == list("abcdefg")
    assert out[2].status == "error" and "row 2 (line 3)" in out[2].error and "no prompt" in out[2].error
    assert out[4].status == "error" and "row 4 (line 5)" in out[4].error and '"top_p" must be' in out[4].error
    assert out[4].prompt == "Kept prompt" and out[4].text is None
    for r in (0, 1, 3, 5, 6):
        assert out[r].status == "ok" and out[r].text.startswith(out[r].prompt) and out[r].text != out[r].prompt
    assert out[0].text == out[3].text  # the same prompt and seed: the same text
    assert out[0].text.startswith(out[5].text) and len(out[5].text) < len(out[0].text)  # 5 tokens of the 24
    assert "truncated from the left to the model's context of 64" in out[6].error
    series = platform.api("GET", f"/jobs/{job_id}/metrics").json()["series"]
    assert series["throughput/rows_per_s"] and series["throughput/tokens_per_s"]

    artifacts = {a["name"]: a for a in platform.api("GET", f"/jobs/{job_id}/artifacts").json()["artifacts"]}
    lines = [json.loads(line) for line in download(platform, artifacts["outputs.jsonl"]).splitlines()]
    assert [(line["row"], line["row_id"], line["status"]) for line in lines] == [
        (r, "abcdefg"[r], "error" if r in (2, 4) else "ok") for r in range(7)]
    table = list(csv.DictReader(io.StringIO(download(platform, artifacts["outputs.csv"]))))
    assert [r["row_id"] for r in table] == list("abcdefg") and table[1]["text"] == out[1].text

    # The same rows in another order, one at a time, with a stop string on a copy of row 0: the rows with their own
    # seed have the same texts (the others' seeds come from their row numbers, which changed).
    new_text = out[0].text[len("ROMEO:"):]
    stop = new_text[len(new_text) // 2:][:2]
    assert stop and new_text.find(stop) > 0
    again = [ROWS[i] for i in (6, 5, 3, 1, 0)] + [{**ROWS[0], "id": "s", "stop": stop}]
    second = platform.submit({"type": "generate", "base": "tiny", "dataset": upload(platform, again),
                              "params": {"seed": 5, "batch_size": 1}})
    finished(platform, second)
    by_id = {o.row_id: o for o in stored(platform, second)}
    for row_id in "adf":
        assert by_id[row_id].text == out["abcdefg".index(row_id)].text, row_id
    assert by_id["s"].text == "ROMEO:" + new_text[:new_text.find(stop)]  # cut before its stop string

    # Every row stored as ok: nothing to retry; all rows: a new job with every row.
    assert platform.api("POST", f"/jobs/{second}/retry", json={"only_failed": True}).status_code == 409
    # Its failed rows failed on their input: a retry of them alone is refused, saying why.
    retry = platform.api("POST", f"/jobs/{job_id}/retry", json={"only_failed": True})
    assert retry.status_code == 409 and "failed on its input" in retry.json()["message"], retry.text


def test_rows_from_a_fine_tuned_job_and_a_cancel_keeps_the_finished_rows(hf_platform):
    platform = hf_platform
    params = {"base": "tiny", "block_size": 32, "batch_size": 4, "max_steps": 4, "eval_interval": 2,
              "eval_iters": 1, "checkpoint_interval": 2, "warmup_steps": 1}
    train = platform.submit({"type": "train", "model": "hf-causal-lm", "dataset": platform.upload_text(
        CORPUS.read_text()[:4000]), "params": params})
    finished(platform, train)
    rows = [{"id": "x", "prompt": "First", "seed": 3, "max_new_tokens": 8}, {"prompt": "First", "seed": 3},
            {"id": "bad", "prompt": "First", "max_new_tokens": 0}]
    job_id = platform.submit({"type": "generate", "source_job": train, "dataset": upload(platform, rows),
                              "params": {"num_samples": 2, "max_new_tokens": 8}})
    job = finished(platform, job_id)
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (3, 3, 1)
    out = stored(platform, job_id)
    assert [(o.row, o.index, o.row_id, o.status) for o in out] == [
        (0, 0, "x", "ok"), (0, 1, "x", "ok"), (1, 2, None, "ok"), (1, 3, None, "ok"), (2, 4, "bad", "error")]
    assert [o.text for o in out[:2]] == [o.text for o in out[2:4]] and out[0].text != out[1].text  # row seeds
    assert out[4].prompt == "First" and "row 2 (line 3)" in out[4].error

    # A long job cancelled part-way keeps the rows it finished, counted.
    many = platform.submit({"type": "generate", "source_job": train, "dataset": upload(
        platform, [{"prompt": f"Row {i}"} for i in range(400)]), "params": {"max_new_tokens": 400,
                                                                             "batch_size": 1}})
    platform.wait_for(lambda: platform.job(many)["rows_done"] >= 3, 180, "3 rows stored")
    assert platform.api("POST", f"/jobs/{many}/cancel").status_code in (200, 202)
    job = platform.wait_status(many, ("cancelled", "succeeded", "failed"), timeout=120)
    kept = stored(platform, many)
    assert job["status"] == "cancelled" and 3 <= len(kept) < 400 and job["rows_done"] == len(kept)
    assert [o.row for o in kept] == sorted({o.row for o in kept}) and all(o.status == "ok" for o in kept)


def download(platform, artifact: dict) -> str:
    response = platform.api("GET", f"/artifacts/{artifact['id']}/download")
    assert response.status_code == 200, response.text
    return response.text
