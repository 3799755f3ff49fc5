"""Batch generation's API: templates over CSV columns, refusals that create nothing, outputs paged by row,
the retry endpoint's checks."""

from __future__ import annotations

import threading

import pytest

from genq.db.models import Dataset, Job, Output
from genq.jobs.service import retry_job
from tests.web.conftest import add_job, count, upload

CSV = b"name,features,id\nlamp,brass,L1\nchair,oak,C2\n"


def generate(client, auth, source: int, **fields):
    return client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": source, **fields})


def test_csv_template_fills_the_rows_and_a_missing_column_is_refused(client, auth, db):
    source = add_job(db, status="succeeded", model="gpt")
    dataset = upload(client, auth, CSV, "products.csv").json["id"]
    answer = generate(client, auth, source, dataset=dataset, params={"template": "Describe {name}: {features}"})
    assert answer.status_code == 201, answer.json
    job = answer.json
    assert job["prompts"] == 2 and job["rows_total"] == 2  # the number: a file's prompts are in the dataset
    with db.session() as s:
        assert s.get(Job, job["id"]).prompts == ["Describe lamp: brass", "Describe chair: oak"]
    assert isinstance(job["params"]["seed"], int)  # fixed at submission: a resumed job draws the same texts
    jobs = count(db, Job)
    for fields, words in [({"dataset": dataset, "params": {"template": "A {colour} {name}"}}, "column 'colour'"),
                          ({"prompts": ["x"], "params": {"template": "{name}"}}, "CSV prompts dataset"),
                          ({"dataset": dataset, "params": {"template": "{name"}}, "malformed"),
                          ({"dataset": dataset, "params": {"template": "{name!x}"}}, "no conversion"),
                          ({"dataset": dataset, "params": {"template": "{name:d}"}}, "format spec"),
                          ({"dataset": dataset, "params": {"template": "{name:{features}}"}}, "format spec")]:
        answer = generate(client, auth, source, **fields)
        assert answer.status_code == 422 and words in answer.json["message"], answer.json
    assert count(db, Job) == jobs


def test_a_prompts_file_over_the_size_limit_is_refused_unread(client, auth, db, monkeypatch):
    monkeypatch.setattr("genq.datasets.MAX_PROMPTS_BYTES", 100)
    answer = upload(client, auth, b'{"prompt": "hello"}\n' * 10, "big.jsonl")
    assert answer.status_code == 413 and "at most 100" in answer.json["message"]
    assert count(db, Dataset) == 0


def test_outputs_page_by_row(client, auth, db):
    job = add_job(db, type="generate", status="succeeded", params={"num_samples": 2}, rows_total=5)
    with db.session() as s:
        for row in (0, 1, 3, 4):  # row 2 not stored (yet)
            for k in range(2):
                s.add(Output(job_id=job, index=2 * row + k, row=row, row_id=f"r{row}", kind="text", text=f"{row}.{k}"))
    pages, after = [], -1
    while after is not None:
        answer = client.get(f"/api/v1/jobs/{job}/outputs?after={after}&limit=2", headers=auth).json
        pages.append([(o["row"], o["text"]) for o in answer["outputs"]])
        after = answer["next"]
    assert pages == [[(0, "0.0"), (0, "0.1"), (1, "1.0"), (1, "1.1")], [(3, "3.0"), (3, "3.1"), (4, "4.0"), (4, "4.1")]]
    first = client.get(f"/api/v1/jobs/{job}/outputs?limit=1", headers=auth).json
    assert [o["row_id"] for o in first["outputs"]] == ["r0", "r0"] and first["next"] == 0
    assert client.get(f"/api/v1/jobs/{job}/outputs?after=4", headers=auth).json == {"outputs": [], "next": None}
    assert client.get(f"/api/v1/jobs/{job}/outputs?limit=x", headers=auth).status_code == 422
    for far in ("99999999999999999999999", "9" * 5000):  # past every row, however many digits: an empty page
        assert client.get(f"/api/v1/jobs/{job}/outputs?after={far}", headers=auth).json == {"outputs": [],
                                                                                          "next": None}
    below = client.get(f"/api/v1/jobs/{job}/outputs?after=-99999999999999999999999", headers=auth)
    assert below.status_code == 422 and "'after' must be between -1 and" in below.json["message"], below.json
    assert "'after' must be an integer" in client.get(f"/api/v1/jobs/{job}/outputs?after=1e3", headers=auth).text


def test_a_training_jobs_final_samples_page_one_per_row(client, auth, db):
    job = add_job(db, status="succeeded")
    with db.session() as s:
        s.add(Output(job_id=job, index=0, step=10, kind="text", text="a gallery sample"))  # not a final output
        s.add_all(Output(job_id=job, index=i, kind="text", text=f"sample {i}") for i in range(3))
    first = client.get(f"/api/v1/jobs/{job}/outputs?limit=2", headers=auth).json
    assert [o["text"] for o in first["outputs"]] == ["sample 0", "sample 1"] and first["next"] == 1
    rest = client.get(f"/api/v1/jobs/{job}/outputs?after=1&limit=2", headers=auth).json
    assert [o["text"] for o in rest["outputs"]] == ["sample 2"] and rest["next"] is None


def test_a_running_jobs_rows_are_followed_in_the_order_they_were_stored(client, auth, db):
    job = add_job(db, type="generate", status="running", rows_total=4)
    with db.session() as s:
        for row in (2, 0, 3):  # as continuous batching finishes them; row 1 still decoding
            s.add(Output(job_id=job, index=row, row=row, kind="text", text=f"{row}"))
            s.flush()
    seen, cursor = [], 0
    for _ in range(3):
        answer = client.get(f"/api/v1/jobs/{job}/outputs?stored_after={cursor}&limit=2", headers=auth).json
        seen += [o["row"] for o in answer["outputs"]]
        cursor = answer["next"]  # a partial page's last id, then the same cursor again: nothing is lost following it
    assert seen == [2, 0, 3]  # by ?after=ROW a client at row 2 would never see row 0
    with db.session() as s:
        s.add(Output(job_id=job, index=1, row=1, kind="text", text="1"))
    later = client.get(f"/api/v1/jobs/{job}/outputs?stored_after={cursor}", headers=auth).json
    assert [o["row"] for o in later["outputs"]] == [1] and later["next"] == later["outputs"][0]["id"]
    assert client.get(f"/api/v1/jobs/{job}/outputs?stored_after={later['next']}", headers=auth).json == {
        "outputs": [], "next": later["next"]}
    both = client.get(f"/api/v1/jobs/{job}/outputs?after=0&stored_after=0", headers=auth)
    assert both.status_code == 422 and "not both" in both.json["message"]


@pytest.mark.parametrize("fields, body, status, words", [
    ({"status": "running"}, {}, 409, "once it has finished"),
    ({"type": "train"}, {}, 422, "only generation jobs"),
    ({}, {"only_failed": "yes"}, 422, "invalid retry: field 'only_failed': Input should be a valid boolean"),
    ({}, {"only_failed": False, "x": 1}, 422, "invalid retry: unknown field 'x'"),
    ({}, ["only_failed"], 422, "the request body must be a JSON object"),
    ({}, {"only_failed": True}, 409, "no failed rows"),
])
def test_retry_refusals_create_nothing(client, auth, db, fields, body, status, words):
    values = {"type": "generate", "status": "succeeded", "rows_total": 1, **fields}
    job = add_job(db, **values)
    with db.session() as s:
        s.add(Output(job_id=job, index=0, row=0, kind="text", text="ok"))
    jobs = count(db, Job)
    answer = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json=body)
    assert answer.status_code == status and words in answer.json["message"], answer.json
    assert count(db, Job) == jobs


def test_retry_all_rows_or_the_failed_ones(client, auth, db):
    source = add_job(db, status="succeeded", model="gpt")
    job = add_job(db, type="generate", status="cancelled", source_job_id=source, prompts=["a", "b", "c", "d"],
                  rows_total=4, params={"seed": 1})
    with db.session() as s:
        s.add_all([Output(job_id=job, index=0, row=0, kind="text", text="a!"),
                   Output(job_id=job, index=1, row=1, kind="text", status="error", error="row 1: bad")])
    failed = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": True}).json
    assert (failed["rows_total"], failed["retry_of"], failed["status"]) == (3, job, "queued")  # 1 failed, 2 never ran
    client.post(f"/api/v1/jobs/{failed['id']}/cancel", headers=auth)  # one retry of a job at a time
    every = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": False}).json
    assert every["rows_total"] == 4 and every["params"] == {"seed": 1}
    with db.session() as s:
        assert s.get(Job, failed["id"]).only_rows == [1, 2, 3]


def test_a_retry_of_rows_that_failed_on_their_input_alone_is_refused(client, auth, db):
    """Rows fail alone only on their input: a retry of those rows only would fail them again; all rows may run,
    unless all of them failed so."""
    source = add_job(db, status="succeeded", model="gpt")
    job = add_job(db, type="generate", status="failed", source_job_id=source, prompts=["a", "b", "c"],
                  rows_total=3)
    with db.session() as s:
        s.add_all([Output(job_id=job, index=0, row=0, kind="text", text="a!"),
                   Output(job_id=job, index=1, row=1, kind="text", status="error", error="row 1: no tokens"),
                   Output(job_id=job, index=2, row=2, kind="text", status="error", error="row 2: too long")])
    jobs = count(db, Job)
    answer = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={})
    assert answer.status_code == 409 and "failed on its input" in answer.json["message"], answer.json
    assert "row 1: no tokens" in answer.json["message"] and count(db, Job) == jobs
    every = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": False})
    assert every.status_code == 201 and every.json["rows_total"] == 3, every.json
    # a job whose every row failed on its input: all of them again would fail as surely
    only = add_job(db, type="generate", status="failed", source_job_id=source, prompts=["x"], rows_total=1)
    with db.session() as s:
        s.add(Output(job_id=only, index=0, row=0, kind="text", status="error", error="row 0: no tokens"))
    for body in ({}, {"only_failed": False}):
        answer = client.post(f"/api/v1/jobs/{only}/retry", headers=auth, json=body)
        assert answer.status_code == 409 and "row 0: no tokens" in answer.json["message"], answer.json
    assert count(db, Job) == jobs + 2


def test_one_retry_at_a_time_even_of_two_sent_together(client, auth, db):
    """A retry while another of the same job is unfinished is refused; of two sent together, the second waits
    for the first's commit, then is refused, creating nothing."""
    source = add_job(db, status="succeeded", model="gpt")
    job = add_job(db, type="generate", status="failed", source_job_id=source, prompts=["a", "b"], rows_total=2)
    answers = []
    second = threading.Thread(target=lambda: answers.append(
        client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": False})))
    with db.session() as s:
        first = retry_job(s, s.get(Job, job), {"only_failed": False})  # uncommitted until the block ends
        jobs = count(db, Job)
        second.start()
        second.join(1.0)
        assert second.is_alive()  # waiting for the first retry's lock
    second.join(30)
    assert answers[0].status_code == 409, answers[0].json
    assert f"job {first.id} already retries rows of job {job} (queued)" in answers[0].json["message"]
    assert count(db, Job) == jobs + 1
    with db.session() as s:
        s.get(Job, first.id).status = "succeeded"
    again = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": False})
    assert again.status_code == 201 and again.json["retry_of"] == job, again.json


def test_a_retry_keeps_the_base_model_and_preemptible(client, auth, db):
    job = add_job(db, type="generate", status="failed", model="hf-causal-lm", base="tiny", builtin_dataset=None,
                  prompts=["a"], rows_total=1, preemptible=False, priority=7)
    again = client.post(f"/api/v1/jobs/{job}/retry", headers=auth, json={"only_failed": False}).json
    assert (again["base"], again["preemptible"], again["priority"]) == ("tiny", False, 7), again


def test_more_outputs_than_the_limit_are_refused_and_a_dotted_column_is_a_column(client, auth, db):
    source = add_job(db, status="succeeded", model="gpt")
    jobs = count(db, Job)
    answer = generate(client, auth, source, prompts=["x"] * 101, params={"num_samples": 1000})
    assert answer.status_code == 422 and "101,000 outputs" in answer.json["message"], answer.json
    assert count(db, Job) == jobs
    dataset = upload(client, auth, b"a.b,c\nfoo,bar\n", "dotted.csv").json["id"]
    answer = generate(client, auth, source, dataset=dataset, params={"template": "X {a.b} Y"})
    assert answer.status_code == 201, answer.json
    with db.session() as s:
        assert s.get(Job, answer.json["id"]).prompts == ["X foo Y"]
