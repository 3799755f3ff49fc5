"""A job moves between worker hosts that share no folder, through each remote artifact store: S3 (moto's
server) and the web server's proxy. Worker A is killed after a checkpoint reached the store; worker B, with an
empty home of its own, resumes from that checkpoint and finishes; a generation job then reads the result."""

from __future__ import annotations

import os
import signal

import pytest
import redis
import requests
from sqlalchemy import select

from genq.api_tokens import create_token
from genq.db import Database, Job, JobLog, Metric
from tests.s3_server import S3_ENV, moto_server
from tests.worker.platform import CORPUS, Platform, tiny_gpt

PARAMS = tiny_gpt(max_steps=300, checkpoint_interval=100, eval_interval=100)


@pytest.fixture
def bare_platform(settings, redis_url):
    """Like `platform`, but the test starts the web server itself (with its own artifact store)."""
    env = {**os.environ, "GENQ_HOME": str(settings.home), "GENQ_DATABASE_URL": settings.database_url,
           "GENQ_REDIS_URL": redis_url, "GENQ_LEASE_SECONDS": "3", "GENQ_DISPATCH_TIMEOUT_SECONDS": "5",
           "GENQ_TORCH_THREADS": "1", "GENQ_LOG_LEVEL": "INFO"}
    db = Database(settings.database_url)
    with db.session() as s:
        token = create_token(s, team="admin", role="admin")
    redis.Redis.from_url(redis_url).flushdb()
    p = Platform(env=env, home=settings.home, db=db, token=token)
    try:
        yield p
    finally:
        p.stop()
        db.dispose()


def job_row(platform, job_id: int) -> Job:
    with platform.db.session() as s:
        return s.get(Job, job_id)


def run_across_two_hosts(platform: Platform, tmp_path, worker_env: dict[str, str]) -> tuple[int, int, int]:
    """Train on host A, kill it past a checkpoint, finish on host B; generate from the result. (train job,
    generate job, the step of A's last checkpoint the job's row named)."""
    dataset = platform.upload_text(CORPUS.read_text())
    platform.start_scheduler()
    homes = {name: tmp_path / f"host-{name}" for name in "ab"}
    first = platform.spawn("worker", "--name", "a", GENQ_HOME=str(homes["a"]), **worker_env)
    train = platform.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": PARAMS})
    platform.wait_for(lambda: (job_row(platform, train).checkpoint_step or 0) >= 100, 180, "a checkpoint")
    platform.wait_for(lambda: job_row(platform, train).step >= 130, 120, "steps past the checkpoint")
    os.killpg(first.pid, signal.SIGSTOP)  # freeze, read where it was, then kill: nothing more reaches the store
    killed = job_row(platform, train)
    with platform.db.session() as s:
        last_metric = s.scalar(select(Metric.id).order_by(Metric.id.desc()).limit(1))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    platform.spawn("worker", "--name", "b", GENQ_HOME=str(homes["b"]), **worker_env)
    job = platform.wait_status(train, ("succeeded", "failed"), timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    with platform.db.session() as s:
        resumed = s.scalar(select(Metric).where(Metric.job_id == train, Metric.name == "train/loss",
                                                Metric.id > last_metric).order_by(Metric.id).limit(1))
        logs = list(s.scalars(select(JobLog.message).where(JobLog.job_id == train)))
    assert killed.checkpoint_step < resumed.step <= killed.checkpoint_step + PARAMS["checkpoint_interval"], \
        f"resumed at {resumed.step}, the stored checkpoint was at {killed.checkpoint_step}"
    assert any(line.startswith("attempt 2 started") for line in logs), logs
    generate = platform.submit({"type": "generate", "source_job": train, "prompts": ["ROMEO:"],
                                "params": {"max_new_tokens": 20, "num_samples": 2}})
    job = platform.wait_status(generate, ("succeeded", "failed"), timeout=180)
    assert job["status"] == "succeeded", job["error"]
    outputs = platform.api("GET", f"/jobs/{generate}/outputs").json()["outputs"]
    assert len(outputs) == 2 and all(o["text"].startswith("ROMEO:") for o in outputs)
    # host B's folders for the jobs are gone once they ended: what is kept lives in the store
    assert not list((homes["b"] / "work" / "jobs").rglob("*.safetensors"))
    # the web server serves the stored files: the checkpoint and the batch file
    for job_id, name in ((train, "checkpoint-step-300.safetensors"), (generate, "outputs.jsonl")):
        artifacts = platform.api("GET", f"/jobs/{job_id}/artifacts").json()["artifacts"]
        found = next(a for a in artifacts if a["name"] == name)
        body = requests.get(f"{platform.url}{found['url']}", headers={"Authorization": f"Bearer {platform.token}"},
                            timeout=60)
        assert body.status_code == 200 and len(body.content) == found["size_bytes"] > 0
    return train, generate, killed.checkpoint_step


def test_two_hosts_through_s3(bare_platform, tmp_path, settings):
    import boto3

    with moto_server(tmp_path / "moto.log") as endpoint:
        store = {**S3_ENV, "GENQ_S3_ENDPOINT_URL": endpoint, "GENQ_ARTIFACTS": "s3://genq/run"}
        bare_platform.start_web(**store)
        train, _, stored_by_a = run_across_two_hosts(bare_platform, tmp_path, store)
        s3 = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_ENV.items()
                                                           if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="genq", Prefix="run/")["Contents"]]
    assert any(k.startswith("run/datasets/") for k in keys)
    # the checkpoint attempt 2 wrote replaced the one of attempt 1 the row named (A, killed between an upload
    # and its row, may have left a later one: under a1/, which no row names, it is never read)
    assert any(k.startswith(f"run/jobs/{train}/a2/checkpoints/step-00000300/") for k in keys)
    assert not any(k.startswith(f"run/jobs/{train}/a1/checkpoints/step-{stored_by_a:08d}/") for k in keys)
    # the web server kept no file of its own: an upload only passes through its staging folder
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


def test_two_hosts_through_the_web_server(bare_platform, tmp_path, settings):
    bare_platform.start_web()
    with bare_platform.db.session() as s:
        worker_token = create_token(s, team="admin", role="worker")
    train, _, _ = run_across_two_hosts(bare_platform, tmp_path,
                                    {"GENQ_ARTIFACTS": bare_platform.url, "GENQ_TOKEN": worker_token})
    stored = settings.artifacts / "jobs" / str(train) / "a2" / "checkpoints" / "step-00000300"
    assert sorted(p.name for p in stored.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
