"""`genq jobs`, `wait`, `logs -f`, `submit` and `dataset` against a real API (the app served in this process,
SQLite), run as a user runs them: the console script in its own process, or click's runner where no server is
needed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from flask import request
from werkzeug.serving import make_server

from genq import cli_jobs
from genq.api_tokens import create_token, ensure_team
from genq.db.models import Job, JobLog
from genq.errors import GenqError
from genq.events import Publisher
from genq.web import create_app

GENQ = str(Path(sys.executable).with_name("genq"))


@contextlib.contextmanager
def serve(settings, db):
    """The API served on a free port of 127.0.0.1: (env for `genq`, the paths requested so far)."""
    app = create_app({"SETTINGS": settings, "TESTING": True})
    requested: list[str] = []

    @app.after_request
    def note(response):
        requested.append(request.path)
        return response

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with db.session() as s:
        token = create_token(s, "alpha", "admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}
    env.update(GENQ_HOME=str(settings.home), GENQ_URL=f"http://127.0.0.1:{server.server_port}", GENQ_TOKEN=token)
    try:
        yield env, requested
    finally:
        server.shutdown()
        app.extensions["genq"].db.dispose()


@pytest.fixture
def api(settings, db):
    """The API without Redis: no event streams (503), so `genq wait` polls."""
    with serve(dataclasses.replace(settings, redis_url=None), db) as served:
        yield served


@pytest.fixture
def streaming_api(settings, db, redis_url):
    """The API with the suite's Redis: event streams."""
    with serve(dataclasses.replace(settings, redis_url=redis_url), db) as served:
        yield served


def add_jobs(db, n: int, **fields) -> list[int]:
    """`n` queued training jobs of team alpha in one transaction; their ids, oldest first."""
    with db.session() as s:
        team = ensure_team(s, "alpha")
        jobs = [Job(team_id=team.id, type="train", model="gpt", builtin_dataset="pydoc", params={}, status="queued",
                    **fields) for _ in range(n)]
        s.add_all(jobs)
        s.flush()
        return [job.id for job in jobs]


def genq(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GENQ, *args], env=env, capture_output=True, text=True, timeout=120)


def listed_ids(stdout: str) -> list[int]:
    return [int(line.split()[0]) for line in stdout.splitlines()[1:]]


def test_jobs_shows_50_says_when_more_exist_and_pages_with_limit_and_before(api, db):
    env, _ = api
    ids = add_jobs(db, 250)  # more than the API's largest page (200): --limit follows its "next"
    newest = ids[::-1]
    first = genq(env, "jobs")
    assert first.returncode == 0, first.stderr
    assert listed_ids(first.stdout) == newest[:50]
    assert first.stderr.strip() == (f"... more jobs: genq jobs --limit 200 (or --before {newest[49]} "
                                    "for the next ones)")
    more = genq(env, "jobs", "--limit", "230")
    assert listed_ids(more.stdout) == newest[:230] and f"--before {newest[229]}" in more.stderr
    every = genq(env, "jobs", "--limit", "1000")
    assert listed_ids(every.stdout) == newest and every.stderr == ""  # all shown: nothing more to say
    page = genq(env, "jobs", "--before", str(newest[49]), "--limit", "10", "--status", "queued")
    assert listed_ids(page.stdout) == newest[50:60]
    assert f"genq jobs --status queued --limit 200 (or --before {newest[59]} " in page.stderr
    last = genq(env, "jobs", "--before", str(newest[-5]))
    assert listed_ids(last.stdout) == newest[-4:] and last.stderr == ""
    for bad in (["--limit", "0"], ["--before", "0"], ["--limit", "x"]):
        refused = genq(env, "jobs", *bad)
        assert refused.returncode == 2 and bad[0] in refused.stderr, refused.stderr


def test_jobs_rows_line_up_under_their_titles(api, db):
    env, _ = api
    [job_id] = add_jobs(db, 1, progress=0.4)
    header, row = genq(env, "jobs").stdout.splitlines()
    assert row.split()[:7] == [str(job_id), "alpha", "train", "gpt", "queued", "40%", "1"]
    for title, value in (("TEAM", "alpha"), ("TYPE", "train"), ("MODEL", "gpt"), ("STATUS", "queued")):
        assert row.index(value) == header.index(title), (title, header, row)  # left-aligned columns
    for title, value in (("PROGRESS", "40%"), ("POS", "1")):  # right-aligned ones end under their titles' ends
        end = header.index(title) + len(title)
        assert row[:end].endswith(f" {value}") and row[end] == " ", (title, header, row)
    why = row.split("  ")[-1].strip()  # no ETA here: why it waits starts under its title
    assert row.index(why) == header.index("CREATED / WHY IT WAITS"), (header, row)


def interrupt_after_polling(env, requested: list[str], job_id: int, *args: str) -> subprocess.CompletedProcess:
    """Start `genq ARGS`, send it SIGINT (what Ctrl-C sends) once it has read job `job_id`'s status, and wait.
    Its second request for the job says it has read the first answer (the server notes a request before the
    client has its answer: under load a signal after the first could land before the status was known)."""
    # A test run started in the background by a shell ignores SIGINT, and the CLI would inherit that (Python then
    # installs no KeyboardInterrupt): handled here while it starts, the signal is back to its default there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([GENQ, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while requested.count(f"/api/v1/jobs/{job_id}") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_while_waiting_or_following_exits_130_not_1(api, db):
    env, requested = api
    [job_id] = add_jobs(db, 1)  # queued, and no scheduler: it stays so
    waited = interrupt_after_polling(env, requested, job_id, "wait", str(job_id))
    assert waited.returncode == 130, waited.stderr
    assert waited.stderr.strip() == f"interrupted: job {job_id} is still queued (genq wait {job_id} to wait again)"
    requested.clear()
    followed = interrupt_after_polling(env, requested, job_id, "logs", "-f", str(job_id))
    assert followed.returncode == 130, followed.stderr
    assert followed.stderr.strip() == (f"interrupted: job {job_id} is still queued "
                                       f"(genq logs -f {job_id} to follow it again)")
    assert "130" in genq(env, "wait", "--help").stdout  # the help lists it with 1 and 124
    assert "130" in genq(env, "logs", "--help").stdout


def test_wait_follows_the_jobs_event_stream(streaming_api, db, redis_url):
    env, requested = streaming_api
    [job_id] = add_jobs(db, 1)
    started = time.monotonic()
    waiting = subprocess.Popen([GENQ, "wait", str(job_id), "--timeout", "60"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while "/api/v1/events" not in requested and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert "/api/v1/events" in requested
    with db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.error, team = "failed", "out of memory", job.team_id
    Publisher(redis_url).status(job_id, team, "failed")  # what a worker publishes as the job ends
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1, err
    assert err.strip().endswith(f"job {job_id} failed: out of memory")
    # told by the stream, not by polling: one GET of the job, before its stream opened
    assert requested.count(f"/api/v1/jobs/{job_id}") == 1 and requested.count("/api/v1/events") == 1, requested


def test_logs_follow_prints_the_lines_the_event_stream_announces_each_once(streaming_api, db, redis_url):
    env, requested = streaming_api
    [job_id] = add_jobs(db, 1)
    with db.session() as s:
        s.add(JobLog(job_id=job_id, message="written before"))
        team = s.get(Job, job_id).team_id
    following = subprocess.Popen([GENQ, "logs", "-f", str(job_id)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    while "/api/v1/events" not in requested and time.monotonic() - started < 30:
        time.sleep(0.05)
    publisher = Publisher(redis_url)
    with db.session() as s:
        s.add(JobLog(job_id=job_id, message="written while followed"))
    publisher.publish(job_id, team, [("log", {"count": 1})])  # as a worker's flush announces its lines
    shown = [following.stdout.readline(), following.stdout.readline()]  # the job still queued: the event's doing
    assert [line.rstrip("\n").split("  ", 1)[1] for line in shown] == ["written before", "written while followed"]
    with db.session() as s:
        s.add(JobLog(job_id=job_id, message="the last line"))
        s.get(Job, job_id).status = "succeeded"
    publisher.status(job_id, team, "succeeded")
    out, err = following.communicate(timeout=30)
    assert following.returncode == 0, err
    assert [line.split("  ", 1)[1] for line in out.splitlines()] == ["the last line"]
    assert requested.count(f"/api/v1/jobs/{job_id}") == 1, requested  # the stream told the end: no polling


def test_wait_opens_the_stream_again_when_it_ends_before_the_job(settings, db, redis_url):
    short = dataclasses.replace(settings, redis_url=redis_url, event_stream_seconds=1.0, event_keepalive_seconds=5)
    with serve(short, db) as (env, requested):
        [job_id] = add_jobs(db, 1)
        waiting = subprocess.Popen([GENQ, "wait", str(job_id), "--timeout", "60"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while requested.count("/api/v1/events") < 2 and time.monotonic() - started < 30:
            time.sleep(0.05)
        with db.session() as s:
            s.get(Job, job_id).status = "succeeded"  # published by nobody: the next stream's first event tells it
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.strip() == f"job {job_id} succeeded" and requested.count("/api/v1/events") >= 2


def test_wait_times_out_on_time_while_the_stream_is_silent(streaming_api, db):
    env, _ = streaming_api
    [job_id] = add_jobs(db, 1)  # queued, and no scheduler: nothing comes down its stream but keep-alives
    started = time.monotonic()
    result = genq(env, "wait", str(job_id), "--timeout", "2")
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 10  # not at the stream's next keep-alive (15 s)


def test_wait_without_event_streams_polls_and_times_out(api, db):
    env, requested = api
    [job_id] = add_jobs(db, 1)  # queued, and no scheduler: it stays so
    result = genq(env, "wait", str(job_id), "--timeout", "2")
    assert result.returncode == 124, result.stderr
    assert result.stderr.strip().endswith(f"Error: job {job_id} still queued after 2 s")
    assert requested.count("/api/v1/events") == 1 and requested.count(f"/api/v1/jobs/{job_id}") >= 2, requested


@pytest.mark.parametrize("timeout", ["-5", "nan", "inf", "-inf"])
def test_wait_refuses_a_negative_or_non_finite_timeout(timeout):
    result = CliRunner().invoke(cli_jobs.wait, ["7", "--timeout", timeout])
    assert result.exit_code == 2, result.output
    assert "'--timeout'" in result.stderr and "0 (never) or more" in result.stderr, result.stderr


def test_a_refused_submission_names_the_file_it_uploaded_not_its_deleted_dataset(api, tmp_path):
    env, _ = api
    other = tmp_path / "other.txt"
    other.write_text("some text, not images " * 50)
    refused = genq(env, "submit", "train", "--model", "vae", "--dataset", str(other))
    assert refused.returncode == 2
    dataset_id = refused.stderr.split("uploaded as dataset ")[1].split(",")[0]
    assert refused.stderr.strip() == (f"error: model 'vae' trains on images data, but {other} (uploaded as dataset "
                                      f"{dataset_id}, now deleted) holds text"), refused.stderr
    datasets = requests.get(f"{env['GENQ_URL']}/api/v1/datasets", timeout=30,
                            headers={"Authorization": f"Bearer {env['GENQ_TOKEN']}"}).json()["datasets"]
    assert datasets == []  # deleted indeed


def test_dataset_uploads_lists_and_deletes_and_keeps_one_a_job_uses(api, db, tmp_path):
    env, _ = api
    corpus, other = tmp_path / "corpus.txt", tmp_path / "other.txt"
    corpus.write_text("some text " * 50)
    other.write_text("more text " * 20)
    uploaded = genq(env, "dataset", "upload", str(corpus), "--name", "my corpus")
    assert uploaded.returncode == 0, uploaded.stderr
    used = int(uploaded.stdout)
    assert f"uploaded {corpus} as dataset {used} (text)" in uploaded.stderr
    unused = int(genq(env, "dataset", "upload", str(other)).stdout)
    listed = genq(env, "dataset", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "TEAM", "KIND", "BYTES", "CREATED", "NAME"]
    assert [row.split()[:4] for row in rows] == [[str(unused), "alpha", "text", str(other.stat().st_size)],
                                                 [str(used), "alpha", "text", str(corpus.stat().st_size)]]
    assert rows[1].endswith("my corpus") and rows[0].endswith("other.txt")
    assert listed_ids(genq(env, "dataset", "list", "--kind", "images").stdout) == []

    job = add_jobs(db, 1, dataset_id=used)[0]
    refused = genq(env, "dataset", "delete", str(used))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: dataset {used} is used by job {job}: a job's dataset is kept, as the "
                                      "record of what it ran on")
    deleted = genq(env, "dataset", "delete", str(unused))
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted dataset {unused} (other.txt)"
    assert listed_ids(genq(env, "dataset", "list").stdout) == [used]

    wrong_kind = genq(env, "dataset", "upload", str(corpus), "--kind", "video")
    assert wrong_kind.returncode == 2 and "'video' is not one of 'text', 'images', 'audio', 'prompts'" in (
        wrong_kind.stderr), wrong_kind.stderr
    assert listed_ids(genq(env, "dataset", "list").stdout) == [used]  # nothing uploaded


def test_a_prompts_file_named_neither_csv_nor_jsonl_is_uploaded_as_prompts(api, db, tmp_path):
    """As the README says: a file named neither .csv nor .jsonl is JSONL when its first line is a JSON object (it
    was uploaded as text, and the generation job refused)."""
    env, _ = api
    source = add_jobs(db, 1)[0]
    with db.session() as s:
        s.get(Job, source).status = "succeeded"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('{"prompt": "ROMEO:"}\n')
    submitted = genq(env, "submit", "generate", "--from", str(source), "--prompts", str(prompts))
    assert submitted.returncode == 0, submitted.stderr
    assert f"uploaded {prompts} as dataset" in submitted.stderr and "(prompts)" in submitted.stderr


def test_generate_without_prompts_asks_for_unconditional_samples(api, db):
    env, _ = api
    source = add_jobs(db, 1)[0]
    with db.session() as s:
        s.get(Job, source).status = "succeeded"
    submitted = genq(env, "submit", "generate", "--from", str(source), "--param", "num_samples=3")
    assert submitted.returncode == 0, submitted.stderr
    with db.session() as s:
        job = s.get(Job, int(submitted.stdout))
        assert (job.prompts, job.params["num_samples"]) == (None, 3)


def test_a_refused_submission_whose_upload_stays_says_so(monkeypatch, tmp_path):
    class Stub:
        def upload(self, path, team=None, kind=None):
            return {"id": 5, "kind": "text"}

        def submit(self, payload):
            raise GenqError("model 'vae' trains on images data, but dataset 5 holds text (not dataset 55)")

        def delete_dataset(self, dataset_id):
            raise GenqError("the server is restarting")

    monkeypatch.setattr(cli_jobs, "connect", Stub)
    (tmp_path / "other.txt").write_text("text")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_jobs.submit, ["train", "--model", "vae", "--dataset", "other.txt"])
    assert isinstance(result.exception, GenqError)
    assert result.exception.message == ("model 'vae' trains on images data, but other.txt (uploaded as dataset 5) "
                                        "holds text (not dataset 55)")
    assert "the upload stays as dataset 5: deleting it failed (the server is restarting)" in result.stderr


def test_an_empty_or_missing_token_is_said_not_replaced_by_the_operators(api, settings):
    env, requested = api
    (settings.home / "admin-token").write_text("the-operators-token")
    empty = genq(env | {"GENQ_TOKEN": " "}, "jobs")
    assert empty.returncode == 2 and "GENQ_TOKEN is set but empty" in empty.stderr, empty.stderr
    (settings.home / "admin-token").unlink()
    missing = genq({k: v for k, v in env.items() if k != "GENQ_TOKEN"}, "jobs")
    assert missing.returncode == 2 and "no token: set GENQ_TOKEN" in missing.stderr, missing.stderr
    assert requested == []  # neither reached the server
