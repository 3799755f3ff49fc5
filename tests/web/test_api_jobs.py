"""POST /api/v1/jobs: submission and its validation, for training and generation."""

from __future__ import annotations

import pytest

from genq.db.models import Job, JobLog
from tests.web.conftest import add_job, add_worker, count, png, submit, upload, wav, zipped

CONTRACT_FIELDS = {
    "id",
    "type",
    "model",
    "team",
    "status",
    "progress",
    "step",
    "attempts",
    "queue_position",
    "error",
    "created_at",
    "started_at",
    "finished_at",
}


def test_submit_train_on_builtin(client, auth, db):
    answer = submit(client, auth, priority=5)
    assert answer.status_code == 201, answer.json
    job = answer.json
    assert CONTRACT_FIELDS <= set(job)
    assert (job["status"], job["type"], job["model"], job["team"], job["dataset"]) == (
        "queued",
        "train",
        "gpt",
        "alpha",
        "pydoc",
    )
    assert job["params"]["max_steps"] == 20 and job["params"]["n_head"] == 4  # defaults filled in
    assert job["priority"] == 5 and job["pool"] == "default"
    # the answer does not forecast the pool (a burst of submissions would cost the square of its size): GET does
    assert (job["queue_position"], job["eta"], job["wait_reason"]) == (None, None, None)
    assert answer.headers["Location"].endswith(f"/api/v1/jobs/{job['id']}")
    shown = client.get(answer.headers["Location"], headers=auth).json
    assert shown["queue_position"] == 0 and shown["wait_reason"]
    with db.session() as s:
        row = s.get(Job, job["id"])
        assert row.dispatched_at is None and row.status == "queued" and row.builtin_dataset == "pydoc"


@pytest.mark.parametrize(
    "model, dataset", [("gru", "pydoc"), ("dcgan", "digits"), ("vae", "digits"), ("wavenet", "tones")]
)
def test_submit_every_model_on_its_builtin(client, auth, model, dataset):
    answer = client.post(
        "/api/v1/jobs", headers=auth, json={"type": "train", "model": model, "dataset": dataset}
    )
    assert answer.status_code == 201, answer.json


def test_submit_on_uploaded_dataset(client, auth):
    text_id = upload(client, auth, b"to be or not to be\n" * 50, "t.txt").json["id"]
    images_id = upload(client, auth, zipped({"a.png": png(), "b.png": png(color=9)}), "d.zip").json["id"]
    audio_id = upload(client, auth, wav(), "a.wav").json["id"]
    assert submit(client, auth, dataset=text_id).json["dataset"] == text_id
    assert submit(client, auth, dataset=str(text_id)).status_code == 201
    assert submit(client, auth, model="vae", params={}, dataset=images_id).status_code == 201
    assert submit(client, auth, model="wavenet", params={}, dataset=audio_id).status_code == 201
    wrong = submit(client, auth, model="wavenet", params={}, dataset=images_id)
    assert wrong.status_code == 422 and "audio" in wrong.json["message"] and "images" in wrong.json["message"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "transformer-xl"}, 422, "unknown model 'transformer-xl'"),
        ({"params": {"n_layers": 3}}, 422, "unknown param 'n_layers'"),
        ({"params": {"n_layer": "four"}}, 422, "param 'n_layer'"),
        ({"params": {"n_embd": 100, "n_head": 3}}, 422, "model 'gpt': n_embd (100) must be divisible"),
        ({"params": [1, 2]}, 422, "params"),
        ({"dataset": "nope"}, 404, "dataset 'nope' not found"),
        ({"dataset": 999}, 404, "dataset 999 not found"),
        ({"dataset": ""}, 404, "not found"),
        ({"dataset": 10**30}, 404, "not found"),
        ({"dataset": "\u00b2"}, 404, "dataset '\u00b2' not found"),  # str.isdigit() says yes; int() refuses
        ({"dataset": "\u0661"}, 404, "dataset '\u0661' not found"),  # an Arabic-Indic 1 names no dataset 1
        ({"dataset": "digits"}, 422, "trains on text data"),
        ({"type": "bake"}, 422, "'type'"),
        ({"priority": 10**40}, 422, "priority"),
        ({"priority": "high"}, 422, "priority"),
        ({"gpus": -1}, 422, "gpus"),
        ({"gpus": 2, "params": {"batch_size": 5}}, 422, "batch_size 5 does not split evenly over 2 devices"),
        ({"gpus": 0}, 422, "gpus must be between 1 and 1024, got 0"),
        ({"pool": "../etc"}, 422, "pool"),
        ({"team": "beta"}, 403, "team 'beta'"),
        ({"colour": "red"}, 422, "unknown field 'colour'"),
        ({"params": {"tokenizer": "char\u0000"}}, 422, "NUL"),
        ({"params": {"tokenizer": "\ud800"}}, 422, "Unicode"),
        ({"params": {"n_layer": 96, "n_embd": 16384, "n_head": 128}}, 422, "memory"),
        ({"params": {"seed": 2**63}}, 422, "param 'seed'"),
        ({"params": {"tokenizer": "bpe", "vocab_size": 100}}, 422, "vocab_size (100) must be at least 256"),
        ({"params": {"lr": 1e-3, "min_lr": 5.0}}, 422, "min_lr (5) must be at most lr (0.001)"),
        ({"model": "dcgan", "dataset": "digits", "params": {"batch_size": 1}}, 422, "param 'batch_size'"),
    ],
)
def test_submit_refuses_bad_input(client, auth, db, body, status, words):
    answer = submit(client, auth, **body)
    assert answer.status_code == status, answer.json
    assert words in answer.json["message"] and answer.json["error"]
    assert count(db, Job) == 0 and count(db, JobLog) == 0  # nothing half-created


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"[]",
        b'"train"',
        b'{"type": "train", "model": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe\x00",
        b"[" * 100000,
        b"null",
    ],
)
def test_malformed_json_is_a_client_error(client, auth, db, raw):
    answer = client.post("/api/v1/jobs", headers={**auth, "Content-Type": "application/json"}, data=raw)
    assert answer.status_code in (400, 422), answer.json
    assert set(answer.json) >= {"error", "message"}
    assert count(db, Job) == 0


def test_overflowing_float_is_refused(client, auth, db):
    raw = b'{"type": "train", "model": "gpt", "dataset": "pydoc", "params": {"weight_decay": 1e999}}'
    answer = client.post("/api/v1/jobs", headers={**auth, "Content-Type": "application/json"}, data=raw)
    assert answer.status_code == 422 and "finite" in answer.json["message"]
    assert count(db, Job) == 0


def test_memory_limit_follows_the_pool_workers(client, auth, db):
    add_worker(db, "w1", "tiny", 50 / 1024, pool="small")
    answer = submit(client, auth, pool="small")
    assert answer.status_code == 422 and "50.0 MiB" in answer.json["message"]
    assert answer.json["details"]["estimated_bytes"] > answer.json["details"]["limit_bytes"]
    assert submit(client, auth, pool="default").status_code == 201  # no worker there: the 64 GiB default


def test_generate_from_succeeded_train_job(client, auth, db):
    source = add_job(db, status="succeeded", model="gru")
    answer = client.post(
        "/api/v1/jobs",
        headers=auth,
        json={
            "type": "generate",
            "source_job": source,
            "prompts": ["Once", "upon"],
            "params": {"num_samples": 2},
        },
    )
    assert answer.status_code == 201, answer.json
    job = answer.json
    assert (job["type"], job["model"], job["source_job"], job["prompts"], job["pool"]) == (
        "generate",
        "gru",
        source,
        ["Once", "upon"],
        "default",
    )
    assert job["params"]["num_samples"] == 2 and job["params"]["temperature"] == 1.0
    one_stop = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source,
                                                               "params": {"stop": "\n"}})
    assert one_stop.status_code == 201 and one_stop.json["params"]["stop"] == ["\n"]  # one string, as a row's


def test_generate_with_prompts_dataset(client, auth, db, settings):
    source = add_job(db, status="succeeded", model="dcgan", builtin_dataset="digits")
    prompts = upload(client, auth, b"prompt\nseven\na handwritten three\n", "p.csv").json["id"]
    job = client.post(
        "/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source, "dataset": prompts}
    ).json
    assert job["prompts"] == 2 and job["dataset"] == prompts
    with db.session() as s:
        assert s.get(Job, job["id"]).prompts == ["seven", "a handwritten three"]
    (settings.artifacts / "datasets" / str(prompts) / "data.csv").unlink()
    gone = client.post(
        "/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source, "dataset": prompts}
    )
    assert gone.status_code == 404 and "missing" in gone.json["message"]


@pytest.mark.parametrize(
    "source_fields, extra, status, words",
    [
        ({"status": "running"}, {}, 409, "is running"),
        ({"status": "failed", "error": "boom"}, {}, 409, "is failed"),
        ({"status": "cancelled"}, {}, 409, "is cancelled; a train job generates once it has succeeded, or from the "
                                          "checkpoint it saved when cancelled"),
        ({"status": "queued"}, {}, 409, "queued"),
        ({"status": "succeeded", "type": "generate"}, {}, 422, "generate job"),
        ({"status": "succeeded"}, {"params": {"top_k": "many"}}, 422, "top_k"),
        ({"status": "succeeded"}, {"params": {"top_k": 10**30}}, 422, "top_k"),
        ({"status": "succeeded"}, {"params": {"seed": 2**64}}, 422, "seed"),
        ({"status": "succeeded"}, {"params": {"temperature": 1e-300}}, 422, "temperature"),
        ({"status": "succeeded"}, {"params": {"stop": ["end", ""]}}, 422, "stop"),
        ({"status": "succeeded"}, {"params": {"max_steps": 3}}, 422, "unknown param 'max_steps'"),
        ({"status": "succeeded"}, {"prompts": []}, 422, "prompts"),
        ({"status": "succeeded"}, {"prompts": "not a list"}, 422, "prompts"),
        ({"status": "succeeded"}, {"prompts": ["a", 3]}, 422, "prompts"),
        ({"status": "succeeded"}, {"dataset": 12345}, 404, "dataset 12345"),
    ],
)
def test_generate_refuses(client, auth, db, source_fields, extra, status, words):
    source = add_job(db, **source_fields)
    answer = client.post(
        "/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source, **extra}
    )
    assert answer.status_code == status, answer.json
    assert words in answer.json["message"]
    assert count(db, Job) == 1


def test_generate_refuses_other_teams_and_missing_sources(client, auth, other_auth, db):
    theirs = add_job(db, team="beta", status="succeeded")
    for source in (theirs, 424242):
        answer = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source})
        assert answer.status_code == 404 and f"source job {source} not found" in answer.json["message"]
    text_ds = upload(client, auth, b"plain", "t.txt").json["id"]
    mine = add_job(db, status="succeeded")
    both = client.post(
        "/api/v1/jobs",
        headers=auth,
        json={"type": "generate", "source_job": mine, "dataset": text_ds, "prompts": ["x"]},
    )
    assert both.status_code == 422 and "not both" in both.json["message"]
    wrong_kind = client.post(
        "/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": mine, "dataset": text_ds}
    )
    assert wrong_kind.status_code == 422 and "prompts dataset" in wrong_kind.json["message"]


def test_a_running_jobs_eta_is_in_the_future_or_unknown(client, auth, db):
    from datetime import timedelta

    from genq.db.models import utcnow

    overdue = add_job(db, status="running", started_at=utcnow() - timedelta(hours=1), eta_at=utcnow() - timedelta(1))
    rows = add_job(db, type="generate", status="running", started_at=utcnow(), rows_total=3000)
    ahead = add_job(db, type="generate", status="running", started_at=utcnow(), rows_total=3000,
                    eta_at=utcnow() + timedelta(minutes=5))
    etas = [client.get(f"/api/v1/jobs/{j}", headers=auth).json["eta"] for j in (overdue, rows, ahead)]
    assert etas[:2] == [None, None] and etas[2] is not None


@pytest.mark.parametrize("prompts, words", [([""], "prompt 1 is empty (leave prompts out for unconditional"),
                                            (["Once", "  \n"], "prompt 2 is empty")])
def test_a_blank_inline_prompt_is_refused_as_in_a_prompts_file(client, auth, db, prompts, words):
    source = add_job(db, status="succeeded", model="gru")
    before = count(db, Job)
    answer = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source,
                                                             "prompts": prompts})
    assert answer.status_code == 422 and words in answer.json["message"], answer.json
    assert "field 'prompts'" in answer.json["message"] and count(db, Job) == before
