"""Dashboard pages: they render, post through the same service as the API, and show errors on the form."""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from sqlalchemy import select

from genq.db.models import Dataset, Job, JobLog, Output
from tests.web.conftest import (
    add_artifact,
    add_job,
    add_metrics,
    add_output,
    add_worker,
    bearer,
    count,
    csrf_from,
    login,
    make_token,
    png,
    wav,
)


@pytest.fixture
def browser(client, token):
    """A test client signed in through /login."""
    login(client, token)
    return client


def test_pages_render_with_a_bearer_header(client, auth, db):
    job_id = add_job(db)
    for path in ("/", f"/jobs/{job_id}", "/submit", "/submit?type=generate", "/datasets", "/workers"):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 200 and answer.mimetype == "text/html", path
    assert client.get("/").status_code == 302  # no credentials: to the login page
    assert client.get("/").location.startswith("/login?next=/")


def test_job_list_shows_status_and_progress(browser, db):
    add_job(db, status="running", progress=0.42, step=42)
    page = browser.get("/").text
    assert 'class="status status-running"' in page and '<progress max="1" value="0.42">' in page
    assert "42%" in page and 'data-poll="/api/v1/jobs?limit=50"' in page


@pytest.mark.parametrize("query, words", [("status=bogus", "no status &#39;bogus&#39;: the statuses are queued"),
                                          ("type=tune", "no type &#39;tune&#39;: the types are train and generate")])
def test_a_filter_naming_no_status_or_type_says_so_and_shows_no_jobs(browser, db, query, words):
    add_job(db, status="running")
    answer = browser.get(f"/?{query}")
    assert answer.status_code == 400 and words in answer.text
    assert 'data-job-id="' not in answer.text and "data-poll" not in answer.text
    assert 'data-job-id="' in browser.get("/?status=running&type=train").text


def test_the_job_list_pages_to_older_jobs(browser, db):
    ids = [add_job(db, status="succeeded", progress=1.0) for _ in range(52)]
    first = browser.get("/").text
    shown = [int(i) for i in re.findall(r'data-job-id="(\d+)"', first)]
    assert shown == ids[::-1][:50] and "Newest jobs" not in first
    older = re.search(r'href="\?before=(\d+)" rel="next">Older jobs', first)
    assert older and int(older[1]) == ids[2]
    second = browser.get(f"/?before={older[1]}").text
    assert [int(i) for i in re.findall(r'data-job-id="(\d+)"', second)] == ids[1::-1]
    assert "Older jobs" not in second and "Newest jobs" in second
    assert "data-events" not in second  # an older page stands still: the live list is the newest 50
    for huge in ("9223372036854775808", "9" * 30):  # past any id (and past SQLite's integers): from the newest
        beyond = browser.get(f"/?before={huge}")
        assert beyond.status_code == 200 and re.findall(r'data-job-id="(\d+)"', beyond.text)[:1] == [str(ids[-1])]


def test_job_page_shows_everything(browser, db, settings):
    failed = add_job(db, status="failed", error="CUDA out of memory <script>", attempts=3)
    add_metrics(db, failed, "train/loss", [3.0, 2.5, 2.0], every=10)
    add_metrics(db, failed, "val/loss", [2.9, 2.4], every=20)
    add_metrics(db, failed, "val/perplexity", [18.2, 11.0], every=20)
    page = browser.get(f"/jobs/{failed}").text
    assert "CUDA out of memory &lt;script&gt;" in page  # escaped
    assert '<dd id="job-attempts">3 / 3</dd>' in page
    restarted = add_job(db, status="running", attempts=4, preemptions=3)  # three clean restarts of genq up
    shown = browser.get(f"/jobs/{restarted}").text
    assert '<dd id="job-attempts">1 / 3</dd>' in shown and "3 times" in shown  # hand-backs are not attempts
    sources = json.loads(re.search(r"id=\"loss-chart\"[^>]*data-sources='([^']*)'", page).group(1))
    assert sources == [{"job": failed, "name": n, "label": n} for n in ("train/loss", "val/loss")]
    drawn = browser.get(f"/api/v1/jobs/{failed}/metrics?points=800&name=train/loss").json  # what the chart fetches
    assert drawn["series"] == {"train/loss": [[0, 3.0], [10, 2.5], [20, 2.0]]}
    assert "val/perplexity" in page and "11" in page
    assert "Cancel" not in page.split("<main>")[1].split("</h1>")[1].split("</div>")[0]

    gen = add_job(db, type="generate", status="succeeded", model="dcgan")
    img = add_artifact(db, settings, gen, "o0.png", png(), "image/png")
    snd = add_artifact(db, settings, gen, "o1.wav", wav(), "audio/wav")
    add_output(db, gen, 0, "image", prompt="seven", artifact_id=img)
    add_output(db, gen, 1, "audio", artifact_id=snd)
    add_output(db, gen, 2, "text", prompt="Once", text="Once upon a time")
    page = browser.get(f"/jobs/{gen}").text
    assert f'<img src="/api/v1/artifacts/{img}/download"' in page
    assert f'<audio controls preload="none" src="/api/v1/artifacts/{snd}/download">' in page
    assert "Once upon a time" in page
    assert browser.get(f"/api/v1/artifacts/{img}/download").status_code == 200  # the cookie fetches images

    done = add_job(db, status="succeeded")
    assert f"/submit?type=generate&amp;source_job={done}" in browser.get(f"/jobs/{done}").text


def test_job_page_shows_the_newest_log_lines(browser, db):
    job_id = add_job(db, status="running")
    with db.session() as s:
        s.add_all(JobLog(job_id=job_id, message=f"line {i:04d}") for i in range(1100))
    page = browser.get(f"/jobs/{job_id}").text
    shown = [int(n) for n in re.findall(r"line (\d{4})", page)]
    assert shown == list(range(1050, 1100))


def test_submit_train_form(browser, db):
    page = browser.get("/submit").text
    form = {
        "csrf_token": csrf_from(page),
        "type": "train",
        "model": "gpt",
        "dataset": "pydoc",
        "params": "max_steps=50\nn_layer=2\n# a comment\ntokenizer=char\ndropout=0.1",
        "priority": "3",
        "gpus": "1",
        "pool": "default",
    }
    answer = browser.post("/submit", data=form)
    assert answer.status_code == 302
    with db.session() as s:
        job = s.get(Job, int(answer.location.rsplit("/", 1)[-1]))
        assert job.params["max_steps"] == 50 and job.params["dropout"] == 0.1 and job.priority == 3
        assert job.gpus == 1
    json_form = {**form, "params": '{"max_steps": 7}'}
    assert browser.post("/submit", data=json_form).status_code == 302
    gang = browser.post("/submit", data={**form, "gpus": "2", "params": "batch_size=8"})
    assert gang.status_code == 302  # no worker online: accepted, it waits for a host of two slots
    with db.session() as s:
        assert s.get(Job, int(gang.location.rsplit("/", 1)[-1])).gpus == 2


@pytest.mark.parametrize(
    "changes, words, field",
    [
        ({"model": "nope"}, "unknown model", "model"),
        ({"params": "max_stepz=3"}, "unknown param", "params"),
        ({"params": "no equals sign"}, "KEY=VALUE", "params"),
        ({"params": "{broken"}, "JSON", "params"),
        ({"params": '{"a": ' + "[" * 100_000}, "nested too deeply", "params"),
        ({"params": "n_layer=" + "[" * 100_000}, "should be a valid integer", "params"),
        ({"dataset": "\u00b2"}, "not found", "dataset"),
        ({"params": "n_layer=2000\nn_embd=4096"}, "n_layer", "params"),
        ({"dataset": "digits"}, "trains on text data", "dataset"),
        ({"priority": "soon"}, "priority", "priority"),
        ({"gpus": "two"}, "gpus must be a whole number", "gpus"),
        ({"priority": "99999999999999999999"}, "less than or equal to 1000", "priority"),
        ({"priority": "9" * 30}, "priority is out of range (30 digits)", "priority"),
        ({"model": "vae", "dataset": "digits", "gpus": "2"}, "runs on one device", "gpus"),
    ],
)
def test_submit_form_shows_errors_next_to_the_field(browser, db, changes, words, field):
    page = browser.get("/submit").text
    form = {
        "csrf_token": csrf_from(page),
        "type": "train",
        "model": "gpt",
        "dataset": "pydoc",
        "params": "",
        **changes,
    }
    answer = browser.post("/submit", data=form)
    assert 400 <= answer.status_code < 500 and answer.mimetype == "text/html"
    error = re.search(r'<p class="field-error" id="error-(\w+)" role="alert">([^<]*)</p>', answer.text)
    assert error and error.group(1) == field and words in error.group(2), answer.text
    control = answer.text.index(f'id="{field}"')
    assert control < error.start() and "<label" not in answer.text[control:error.start()]  # right below it
    assert 'id="form-error"' not in answer.text
    assert count(db, Job) == 0


def test_submit_form_shows_other_errors_above_it(browser, db):
    page = browser.get("/submit").text
    form = {"csrf_token": csrf_from(page), "type": "train", "model": "gpt", "dataset": "pydoc", "gpus": "2"}
    answer = browser.post("/submit", data={**form, "type": "bogus"})
    assert answer.status_code == 422 and 'id="form-error"' in answer.text and "'type'" in html.unescape(answer.text)


def test_submit_generate_form(browser, db):
    source = add_job(db, status="succeeded")
    page = browser.get(f"/submit?type=generate&source_job={source}").text
    assert f'<option value="{source}" selected>' in page
    answer = browser.post(
        "/submit",
        data={
            "csrf_token": csrf_from(page),
            "type": "generate",
            "source_job": str(source),
            "prompts": "Once\n\nupon a time\n",
            "params": "num_samples=2\ntemperature=0.8",
        },
    )
    assert answer.status_code == 302
    with db.session() as s:
        job = s.get(Job, int(answer.location.rsplit("/", 1)[-1]))
        assert job.prompts == ["Once", "upon a time"] and job.params["temperature"] == 0.8
    running = add_job(db, status="running")
    answer = browser.post(
        "/submit", data={"csrf_token": csrf_from(page), "type": "generate", "source_job": str(running)}
    )
    assert answer.status_code == 409 and "is running" in answer.text
    prompts = browser.post("/datasets", data={"csrf_token": csrf_from(page), "file": (io.BytesIO(b"seven\nthree\n"),
                                                                                      "p.csv")},
                           content_type="multipart/form-data")
    assert prompts.status_code == 302
    with db.session() as s:
        prompts_id = s.scalars(select(Dataset.id).where(Dataset.kind == "prompts")).one()
    refused = browser.post("/submit", data={"csrf_token": csrf_from(page), "type": "generate",
                                            "source_job": str(source), "prompts_dataset": str(prompts_id),
                                            "params": "num_samples=0"})
    assert refused.status_code == 422 and "num_samples" in refused.text
    assert f'<option value="{prompts_id}" selected>' in refused.text  # kept for the next try, as the other fields
    stopped = add_job(db, status="cancelled", checkpoint_step=140)  # its checkpoint generates too
    add_job(db, status="cancelled")  # none saved: nothing to generate from
    offered = browser.get("/submit?type=generate").text
    assert re.findall(r'<option value="(\d+)"[^>]*>#\d+ gpt \(cancelled', offered) == [str(stopped)]
    nothing = browser.post("/submit", data={"csrf_token": csrf_from(page), "type": "generate", "source_job": " "})
    assert nothing.status_code == 422 and "give a source job (a succeeded training job&#39;s id)" in nothing.text


def test_dataset_upload_form(browser, db, settings):
    page = browser.get("/datasets").text
    ok = browser.post(
        "/datasets",
        data={"csrf_token": csrf_from(page), "name": "tiny", "file": (io.BytesIO(b"hello\n"), "../x.txt")},
        content_type="multipart/form-data",
    )
    assert ok.status_code == 302
    listing = browser.get("/datasets").text
    assert "tiny" in listing and "text" in listing
    bad = browser.post(
        "/datasets",
        data={"csrf_token": csrf_from(page), "kind": "text", "name": "my <corpus>",
              "file": (io.BytesIO(png()), "x.png")},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 422 and "NUL byte" in bad.text and 'id="form-error"' in bad.text
    assert 'value="my &lt;corpus&gt;"' in bad.text  # the name typed is kept (escaped) for the next try
    assert '<option value="text" selected>' in bad.text  # and the kind chosen
    assert count(db, Dataset) == 1
    with db.session() as s:
        dataset_id = s.scalars(select(Dataset.id)).one()
    used = add_job(db, dataset_id=dataset_id)
    browser.post(f"/datasets/{dataset_id}/delete", data={"csrf_token": csrf_from(listing)})
    assert f"used by job {used}" in browser.get("/datasets").text and count(db, Dataset) == 1
    with db.session() as s:
        s.delete(s.get(Job, used))
    assert f'aria-label="Delete dataset {dataset_id}"' in listing
    gone = browser.post(f"/datasets/{dataset_id}/delete", data={"csrf_token": csrf_from(listing)})
    assert gone.status_code == 302 and f"Dataset {dataset_id} deleted." in browser.get("/datasets").text
    assert count(db, Dataset) == 0


def test_cancel_button_and_viewer(client, db):
    job_id = add_job(db)
    viewer = make_token(db, "alpha", "viewer")
    login(client, viewer)
    page = client.get(f"/jobs/{job_id}").text
    assert ">Cancel<" not in page  # viewers get no button, no Submit link, no New job button, no upload form
    assert ">Submit</a>" not in page and ">New job<" not in client.get("/").text
    assert 'id="upload-form"' not in client.get("/datasets").text
    submit_page = client.get("/submit?type=generate").text  # a page of forms it could only have refused
    assert 'id="read-only"' in submit_page and "<form" not in submit_page.split("<main>")[1]
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_from(page)})
    assert "viewer tokens cannot cancel" in client.get(f"/jobs/{job_id}").text
    admin = client.application.test_client()
    login(admin, make_token(db, "alpha", "admin"))
    page = admin.get(f"/jobs/{job_id}").text
    assert ">Cancel<" in page
    assert admin.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_from(page)}).status_code == 302
    with db.session() as s:
        assert s.get(Job, job_id).status == "cancelled"
    assert (
        "already cancelled"
        in admin.post(
            f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_from(page)}, follow_redirects=True
        ).text
    )


def test_other_teams_job_page_is_404(client, db, auth):
    theirs = add_job(db, team="beta")
    assert client.get(f"/jobs/{theirs}", headers=auth).status_code == 404


def test_workers_page(client, db, auth):
    add_worker(db, "gpu-box:1:x", "A100", 40)
    page = client.get("/workers", headers=bearer(make_token(db))).text
    assert "gpu-box" in page and "A100" in page and "40.0 GiB" in page


def test_job_page_shows_peak_memory_beside_the_submission_estimate(browser, db):
    from genq.core import spec

    params = spec.get("gpt").train_params({"n_layer": 2, "batch_size": 8})
    job = add_job(db, status="succeeded", params=params)
    add_metrics(db, job, "memory/peak_bytes", [100 * 2**20, 150 * 2**20], every=10)
    estimate = spec.get("gpt").memory_bytes(params)
    row = next(line for line in browser.get(f"/jobs/{job}").text.split("<tr>") if "memory/peak_bytes" in line)
    assert "150.0 MiB" in row and f"estimated at submission: {estimate / 2**20:.1f} MiB" in row
    # a generation job has no estimate of its own; a job whose params no longer validate shows none either
    for fields in ({"type": "generate", "params": {}}, {"params": {}}):
        other = add_job(db, status="succeeded", **fields)
        add_metrics(db, other, "memory/peak_bytes", [2**20])
        row = next(line for line in browser.get(f"/jobs/{other}").text.split("<tr>") if "memory/peak_bytes" in line)
        assert "1.0 MiB" in row and "estimated" not in row


def test_generation_job_page_shows_rows_rate_eta_first_rows_and_files(browser, db, settings):
    from datetime import timedelta

    from genq.db.models import Output, utcnow

    eta = utcnow() + timedelta(minutes=5)
    job = add_job(db, type="generate", status="running", params={}, rows_total=500, rows_done=3, rows_failed=1,
                  eta_at=eta)
    add_metrics(db, job, "throughput/rows_per_s", [2.5])
    with db.session() as s:
        s.add_all([Output(job_id=job, index=0, row=0, row_id="sku-1", kind="text", prompt="Lamp", text="Lamp of brass"),
                   Output(job_id=job, index=1, row=1, row_id="sku-2", kind="text", status="error",
                          error="row 1 (line 2): it has no prompt")])
    page = browser.get(f"/jobs/{job}").text
    rows = page[page.index('id="rows"'):]
    assert "3 / 500" in rows and "2.5" in rows and eta.isoformat()[:16].replace("T", " ") in rows
    assert "sku-1" in rows and "Lamp of brass" in rows and "row 1 (line 2): it has no prompt" in rows
    assert "when the job ends" in rows
    jsonl = add_artifact(db, settings, job, "outputs.jsonl", b"{}\n", "application/x-ndjson")
    rows = browser.get(f"/jobs/{job}").text.split('id="rows"')[1]
    assert f"/api/v1/artifacts/{jsonl}/download" in rows


def test_the_operator_generates_from_rates_and_judges_any_teams_jobs(client, db):
    from tests.web.conftest import add_output

    source = add_job(db, team="beta", status="succeeded", model="gpt")
    one, two = (add_job(db, team="beta", type="generate", status="succeeded") for _ in range(2))
    outputs = [add_output(db, job, 0, "text", prompt="p", text=f"from {job}") for job in (one, two)]
    login(client, make_token(db, "admin", "admin"))
    page = client.get(f"/submit?type=generate&source_job={source}").text
    assert f'<option value="{source}"' in page  # another team's job is offered to the operator
    answer = client.post("/submit", data={"csrf_token": csrf_from(page), "type": "generate",
                                          "source_job": str(source), "prompts": "Once"})
    assert answer.status_code == 302, answer.text
    with db.session() as s:
        made = s.get(Job, int(answer.location.rsplit("/", 1)[-1]))
        assert (made.source_job_id, made.team.name) == (source, "beta")  # for the source job's team
    rated = client.put(f"/api/v1/outputs/{outputs[0]}/rating", json={"score": 4},
                       headers={"X-CSRFToken": csrf_from(page)})
    assert rated.status_code == 201, rated.text
    assert f"#{one}" in client.get("/rate").text
    assert "from " in client.get(f"/rate?jobs={one},{two}").text


def test_a_prompts_dataset_with_bad_rows_lists_their_errors_as_text(browser, db):
    page = browser.get("/datasets").text
    rows = b'{"prompt": "ok"}\n' + b"".join(b'{"prompt": "x", "top_p": %d}\n' % i for i in range(2, 7))
    browser.post("/datasets", data={"csrf_token": csrf_from(page), "file": (io.BytesIO(rows), "p.jsonl")},
                 content_type="multipart/form-data")
    listing = browser.get("/datasets").text
    cell = listing.split('<span class="kind">prompts</span>')[1].split("</td>", 3)[2]
    assert "prompts: 6 · bad_rows: 5 · row 1 (line 2): &#34;top_p&#34; must be" in cell, cell
    assert cell.count("row ") == 3 and cell.rstrip().endswith("; …") and "{" not in cell


def test_a_job_from_a_prompts_dataset_shows_their_number_and_the_dataset(browser, db):
    job = add_job(db, type="generate", status="queued", builtin_dataset=None, params={},
                  prompts=["Lamp", "Chair", "Desk"], rows_total=3)
    with db.session() as s:  # what a submission from a prompts file sets: the prompts and the dataset
        row = s.get(Job, job)
        dataset = Dataset(team_id=row.team_id, name="p.jsonl", kind="prompts", filename="p.jsonl",
                          path="datasets/1/p.jsonl", size_bytes=10)
        s.add(dataset)
        s.flush()
        row.dataset_id = dataset.id
    page = browser.get(f"/jobs/{job}")
    assert page.status_code == 200, page.text
    prompts = page.text.split("<h3>Prompts</h3>")[1].split("</p>")[0]
    assert "3 from" in prompts and f"dataset #{dataset.id}" in prompts and "Chair" not in page.text


def test_a_batch_page_says_it_shows_the_first_outputs_and_a_retry_links_its_job(browser, db):
    first = add_job(db, type="generate", status="succeeded", params={}, prompts=["p"] * 300, rows_total=300)
    with db.session() as s:
        s.add_all(Output(job_id=first, index=i, row=i, kind="text", prompt="p", text=f"t{i}") for i in range(300))
    page = browser.get(f"/jobs/{first}").text
    assert page.count('class="output output-text"') == 200 and 'id="outputs-shown"' in page
    retry = add_job(db, type="generate", status="queued", params={}, prompts=["p"] * 300, rows_total=2,
                    retry_of=first, only_rows=[4, 9])
    page = browser.get(f"/jobs/{retry}").text
    assert f'2 rows of <a href="/jobs/{first}">job #{first}</a>' in page and 'id="outputs-shown"' not in page
