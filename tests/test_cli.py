"""`genq up` and the client commands, as a new user runs them: real processes, embedded Redis, SQLite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from genq.client import wait_until_serving
from genq.redis_server import free_port

TINY = ["--param", "n_layer=1", "--param", "n_head=2", "--param", "n_embd=32", "--param", "block_size=32",
        "--param", "batch_size=8", "--param", "max_steps=40", "--param", "eval_interval=20",
        "--param", "eval_iters=2", "--param", "lr=3e-3", "--param", "tokenizer=char"]


# The console script pip installed, as a user runs it.
GENQ = str(Path(sys.executable).with_name("genq"))


@pytest.fixture
def up_env(tmp_path, monkeypatch):
    # Run from a folder holding a `genq` folder (here GENQ_HOME itself): it must not shadow the package
    # in the processes `genq up` starts.
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}
    port = free_port()
    env.update(GENQ_HOME=str(tmp_path / "genq"), GENQ_PORT=str(port), GENQ_URL=f"http://127.0.0.1:{port}",
               GENQ_TORCH_THREADS="1")
    return env


def start_up(env) -> subprocess.Popen:
    process = subprocess.Popen([GENQ, "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait_until_serving(env["GENQ_URL"], process, timeout=90):
        return process
    process.kill()
    raise AssertionError("genq up did not start:\n" + process.communicate()[0])


def stop_up(process) -> str:
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    return out


def genq(env, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([GENQ, *args], env=env, capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_up_trains_from_the_cli_stops_cleanly_and_keeps_its_data(up_env, tmp_path):
    process = start_up(up_env)
    try:
        token_file = tmp_path / "genq" / "admin-token"
        token = token_file.read_text().strip()
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
        job_id = genq(up_env, "submit", "train", "--model", "gpt", "--dataset", str(corpus), *TINY).stdout.strip()
        assert job_id.isdigit()
        genq(up_env, "wait", job_id, "--timeout", "240")
        shown = genq(up_env, "show", job_id).stdout
        assert '"status": "succeeded"' in shown and "train/loss" in shown
        gen = genq(up_env, "submit", "generate", "--from", job_id, "--prompt", "the ",
                   "--param", "num_samples=2", "--param", "max_new_tokens=20").stdout.strip()
        genq(up_env, "wait", gen, "--timeout", "120")
        assert genq(up_env, "show", gen).stdout.count("--- output") == 2
        nothing = genq(up_env, "retry", gen, check=False)
        assert nothing.returncode != 0 and "no failed rows" in nothing.stderr
        again = genq(up_env, "retry", gen, "--all-rows").stdout.strip()
        genq(up_env, "wait", again, "--timeout", "120")
        assert f'"retry_of": {gen}' in genq(up_env, "show", again).stdout
        not_rows = genq(up_env, "retry", job_id, check=False)
        assert not_rows.returncode != 0 and "only generation jobs retry rows" in not_rows.stderr
        assert "attempt 1 started" in genq(up_env, "logs", job_id).stdout
        bad = genq(up_env, "submit", "train", "--model", "gpt", "--dataset", "pydoc", "--param", "n_layr=2",
                   check=False)
        assert bad.returncode != 0 and "n_layr" in bad.stderr
        datasets = requests.get(f"{up_env['GENQ_URL']}/api/v1/datasets", headers={"Authorization": f"Bearer {token}"},
                                timeout=30).json()["datasets"]
        refused = genq(up_env, "submit", "train", "--model", "gpt", "--dataset", str(corpus), "--param", "n_layr=2",
                       check=False)
        assert refused.returncode != 0 and "n_layr" in refused.stderr and "uploaded" not in refused.stderr
        assert requests.get(f"{up_env['GENQ_URL']}/api/v1/datasets", headers={"Authorization": f"Bearer {token}"},
                            timeout=30).json()["datasets"] == datasets  # its upload deleted again
    finally:
        out = stop_up(process)
    assert token in out and up_env["GENQ_URL"] in out

    process = start_up(up_env)  # a restart keeps jobs, datasets and the admin token
    try:
        assert token_file.read_text().strip() == token
        listed = genq(up_env, "jobs").stdout
        assert f"{job_id}" in listed and "succeeded" in listed
    finally:
        stop_up(process)


def test_wait_exits_nonzero_for_a_failed_job(up_env, tmp_path):
    process = start_up(up_env)
    try:
        short = tmp_path / "short.txt"
        short.write_text("ab" * 200)  # one word: bpe merges its 400 bytes into 3 tokens, which the worker finds
        # too short (a text with too few bytes is refused at submission)
        job_id = genq(up_env, "submit", "train", "--model", "gpt", "--dataset", str(short), *TINY,
                      "--param", "tokenizer=bpe").stdout.strip()
        result = genq(up_env, "wait", job_id, "--timeout", "120", check=False)
        assert result.returncode == 1 and "failed" in result.stderr
        logged = genq(up_env, "logs", job_id).stdout
        assert "failed: the dataset" in logged and "Traceback" not in logged  # a data error, said plainly
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
        long = genq(up_env, "submit", "train", "--model", "gpt", "--dataset", str(corpus), *TINY,
                    "--param", "max_steps=100000").stdout.strip()
        result = genq(up_env, "wait", long, "--timeout", "1", check=False)
        assert result.returncode == 124 and f"job {long} still" in result.stderr  # not 1: it has not failed
        genq(up_env, "cancel", long)
    finally:
        stop_up(process)


def test_up_says_so_when_the_web_server_cannot_start(up_env):
    with socket.socket() as taken:  # the port is taken: gunicorn gives up binding it and exits
        taken.bind(("127.0.0.1", int(up_env["GENQ_PORT"])))
        taken.listen()
        result = subprocess.run([GENQ, "up"], env=up_env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "genq is up" not in result.stdout
    assert "the web server is not serving" in result.stderr


def test_operator_lists_and_revokes_tokens(up_env):
    process = start_up(up_env)
    try:
        token = genq(up_env, "token", "create", "--team", "vision", "--role", "viewer").stdout.strip()
        client = {**up_env, "GENQ_TOKEN": token}
        assert genq(client, "jobs").returncode == 0
        listed = genq(up_env, "token", "list", "--team", "vision").stdout.split("\t")
        token_id, prefix = listed[0], listed[3]
        assert listed[1:3] == ["vision", "viewer"] and token.startswith(prefix.removesuffix("..."))
        assert token not in genq(up_env, "token", "list").stdout  # never the secret
        assert "revoked token" in genq(up_env, "token", "revoke", token_id).stdout
        refused = genq(client, "jobs", check=False)
        assert refused.returncode != 0 and "revoked" in refused.stderr  # at once, not after a cache expiry
        again = genq(up_env, "token", "revoke", token_id, check=False)
        assert again.returncode != 0 and "already revoked" in again.stderr
        corpus = Path(up_env["GENQ_HOME"]) / "corpus.txt"
        corpus.write_text("some text to train on " * 50)
        for_vision = genq(up_env, "submit", "train", "--model", "dcgan", "--dataset", str(corpus), "--team", "vision",
                          check=False)  # uploaded for vision: only its kind is wrong
        assert for_vision.returncode != 0 and "holds text" in for_vision.stderr, for_vision.stderr
    finally:
        stop_up(process)


def test_submit_generate_names_a_training_job_or_a_base(up_env):
    for args in ([], ["--from", "3", "--base", "tiny"]):
        result = subprocess.run([GENQ, "submit", "generate", "--prompt", "x", *args], env=up_env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2 and "give --from JOB_ID or --base NAME" in result.stderr


def test_bad_arguments_and_urls_are_one_line_errors_without_a_server(up_env):
    cases = [
        (["submit", "train", "--model", "gpt", "--dataset", "pydoc", "--param", "lr=1e400"], {},
         "'lr=1e400': 1e400 is not a finite number"),
        (["show", "--", "-1"], {}, "-1 is not in the range x>=1"),
        (["submit", "train", "--model", "gpt", "--dataset", "/tmp"], {}, "'/tmp' is a directory: give a file"),
        (["jobs"], {"GENQ_URL": "notaurl", "GENQ_TOKEN": "t"},
         "'notaurl' is not the http(s) URL of a genq server (set GENQ_URL)"),
        (["jobs"], {"GENQ_URL": "http://127.0.0.1:99999", "GENQ_TOKEN": "t"},
         "is not the http(s) URL of a genq server"),
        (["jobs"], {}, "no token: set GENQ_TOKEN"),
        (["worker", "--slots", "0"], {}, "'--slots': 0 is not in the range 1<=x<=256"),
        (["worker", "--gpus", "abc,-1"], {}, "GPU ids are CUDA's numbers from 0"),
        (["scheduler"], {"GENQ_LEASE_SECONDS": "0"}, "GENQ_LEASE_SECONDS must be a number at least 1, not '0'"),
    ]
    for args, env, words in cases:
        result = subprocess.run([GENQ, *args], env={**up_env, **env}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    for part in ("web", "scheduler", "worker"):  # no database yet: each says so, and creates none
        result = subprocess.run([GENQ, part], env={**up_env, "GENQ_REDIS_URL": "redis://127.0.0.1:1/0"},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "run `genq db upgrade` first" in result.stderr, result.stderr
    assert not (Path(up_env["GENQ_HOME"]) / "genq.db").exists()
    no_redis = subprocess.run([GENQ, "up"], env={**up_env, "GENQ_REDIS_URL": "redis://127.0.0.1:1/0"},
                              capture_output=True, text=True, timeout=120)
    assert no_redis.returncode == 1 and "GENQ_REDIS_URL redis://127.0.0.1:1/0 does not answer" in no_redis.stderr
    assert not Path(up_env["GENQ_HOME"]).exists()  # nothing created


def test_show_prints_each_rows_error(monkeypatch):
    from click.testing import CliRunner

    from genq import cli_jobs

    class Stub:
        def job(self, job_id):
            return {"id": job_id, "status": "succeeded", "error": "a row's prompt holds \u201cÉ\u201d"}

        def metrics(self, job_id, points):
            return {}

        def outputs(self, job_id):
            return [{"index": 0, "kind": "text", "prompt": "hi", "text": "hi there", "status": "ok"},
                    {"index": 1, "kind": "text", "prompt": None, "text": None, "status": "error",
                     "error": "row 1 (line 2): it is not JSON"}]

    monkeypatch.setattr(cli_jobs, "connect", Stub)
    out = CliRunner().invoke(cli_jobs.show, ["7"]).output
    assert "hi there" in out and "error: row 1 (line 2): it is not JSON" in out
    assert '"error": "a row\'s prompt holds \u201cÉ\u201d"' in out  # as written, not as \\u escapes


def test_a_server_that_is_not_genq_is_named_as_such(tmp_path):
    import functools
    import http.server
    import threading

    from genq.client import ApiError, Client

    (tmp_path / "api" / "v1").mkdir(parents=True)
    (tmp_path / "api" / "v1" / "jobs").write_text("<html>a page</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "token")
        for call in (client.jobs, lambda: client.job(4)):  # a 200 page, then a 404 page
            with pytest.raises(ApiError, match="no genq JSON: is GENQ_URL the address of a genq server"):
                call()
    finally:
        server.shutdown()
