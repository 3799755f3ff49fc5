"""A worker the artifact store refuses (GENQ_TOKEN invalid, revoked, or not a worker token) does not start, and a
job the store refuses mid-run fails saying so at once, rather than after three lease expiries that name no cause."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from sqlalchemy import select

from genq.api_tokens import create_token
from genq.db import Job, JobLog
from genq.redis_server import free_port
from genq.store_http import HttpStore
from genq.worker.store_access import check_store_access
from tests.worker.platform import CORPUS, tiny_gpt


def start_worker(platform, token: str, *args: str) -> subprocess.CompletedProcess:
    """`genq worker` through the web server's store with `token`: it should refuse at once."""
    env = {**platform.env, "GENQ_ARTIFACTS": platform.url, "GENQ_TOKEN": token}
    try:
        return subprocess.run([sys.executable, "-m", "genq", "worker", "--name", "refused", *args], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker started with a token the store refuses:\n{exc.stderr}")


def test_a_worker_whose_token_the_store_refuses_does_not_start(platform):
    with platform.db.session() as s:
        member, worker = (create_token(s, team="admin", role=role) for role in ("member", "worker"))
    for token, why, args in (("genq_bogus", "HTTP 401", ()), (member, "HTTP 403", ()),
                             ("genq_bogus", "HTTP 401", ("--slots", "2"))):  # refused once, before its processes
        result = start_worker(platform, token, *args)
        assert result.returncode == 1, result.stderr
        assert "GENQ_TOKEN" in result.stderr and why in result.stderr and "--role worker" in result.stderr, \
            result.stderr
        assert "Traceback" not in result.stderr and "online" not in result.stderr, result.stderr
        assert result.stderr.count("cannot start") == 1, result.stderr  # not once per process, restarted
    check_store_access(HttpStore(platform.url, worker))  # a worker token passes
    check_store_access(HttpStore(f"http://127.0.0.1:{free_port()}", "genq_bogus"))  # no answer is no refusal


def test_a_job_the_store_refuses_fails_naming_the_token(platform, settings, redis_url):
    """The token is refused once the worker runs (revoked, say): the job fails at once, its error and its log
    naming the refusal, instead of being left for its lease to expire as after a lost connection."""
    from genq.worker.runner import WorkerContext

    dataset = platform.upload_text(CORPUS.read_text()[:4000])
    with platform.db.session() as s:
        member = create_token(s, team="admin", role="member")
    for token, why in (("genq_revoked", "HTTP 401"), (member, "HTTP 403")):
        job_id = platform.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": tiny_gpt()})
        worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url, artifact_store=platform.url,
                                                   token=token), "default")
        worker.run(job_id)
        with platform.db.session() as s:
            job = s.get(Job, job_id)
            lines = s.scalars(select(JobLog.message).where(JobLog.job_id == job_id)).all()
        assert job.status == "failed", (job.status, lines)
        assert "authentication failed" in job.error and "GENQ_TOKEN" in job.error and why in job.error, job.error
        assert lines[-1] == f"failed: {job.error}"
        worker.db.dispose()


def test_a_job_whose_write_the_database_refuses_fails_at_once_with_its_reason(platform, settings, redis_url,
                                                                              monkeypatch):
    """A DataError (PostgreSQL refusing a value, say) is no lost connection: a retry only repeats it, so the job
    fails at once naming the refusal, not after three lease expiries that blame the worker."""
    from sqlalchemy.exc import DataError

    from genq.worker.runner import WorkerContext

    dataset = platform.upload_text(CORPUS.read_text()[:4000])
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": tiny_gpt()})
    worker = WorkerContext(dataclasses.replace(settings, redis_url=redis_url), "default")

    def refused(*_args):
        raise DataError("INSERT INTO outputs ...", {}, ValueError("PostgreSQL text fields cannot contain NUL (0x00) "
                                                                   "bytes"))

    monkeypatch.setattr(worker, "_execute", refused)
    worker.run(job_id)
    with platform.db.session() as s:
        job = s.get(Job, job_id)
        lines = s.scalars(select(JobLog.message).where(JobLog.job_id == job_id)).all()
    assert job.status == "failed", (job.status, lines)
    assert job.error == ("the database refused what the job wrote: PostgreSQL text fields cannot contain NUL (0x00) "
                         "bytes")
    assert lines[-1] == f"failed: {job.error}" and job.attempts == 1
    worker.db.dispose()
