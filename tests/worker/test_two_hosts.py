"""Two worker hosts with nothing shared but the network: each in its own network namespace (veth pairs and a
bridge made by the test), with an empty home folder and a host name of its own, reaching the web server, the
test's Redis and PostgreSQL only over its link. A training job runs on host A; A's link is cut mid-job; the
job resumes on host B from A's last stored checkpoint and succeeds; A comes back and its stale run is fenced
off; a generation job from the result runs on either host. Once through the web server's proxied store, once
through S3 (moto's server on the bridge).

PostgreSQL: the machine's server listens on 127.0.0.1 only, so the test relays the bridge address to it
(tests/netns.py TcpRelay); SQLite cannot be shared over a network, so the SQLite variant is skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from genq.api_tokens import create_token
from genq.client import wait_until_serving
from genq.db import Artifact, Database, Job, JobLog, Metric
from genq.redis_server import EmbeddedRedis
from tests.netns import Network, TcpRelay, netns_unavailable
from tests.s3_server import S3_ENV, moto_server
from tests.worker.platform import CORPUS, Platform, tiny_gpt

# The waits below add up to less than the timeout, so a stuck run fails with the processes' logs.
pytestmark = [pytest.mark.skipif(bool(reason := netns_unavailable()), reason=reason or ""), pytest.mark.timeout(600)]
PARAMS = tiny_gpt(max_steps=400, checkpoint_interval=100, eval_interval=100)


class Hosts(Platform):
    """The platform's services in the root namespace on the bridge address, workers in namespaces."""

    network: Network

    def start_worker_on(self, host: str, **env: str) -> subprocess.Popen:
        home = self.home.parent / f"host-{host}"
        home.mkdir(exist_ok=True)
        log = open(self.home / f"worker-{host}-{len(self.processes)}.log", "wb")
        argv = self.network.command(host, f"genq-host-{host}", [sys.executable, "-m", "genq", "worker"])
        process = subprocess.Popen(argv, env={**self.env, **self.host_env, "GENQ_HOME": str(home), **env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process


@pytest.fixture
def hosts(settings, tmp_path):
    if settings.database_url.startswith("sqlite"):
        pytest.skip("hosts reach the database over the network: PostgreSQL only (set GENQ_TEST_DATABASE_URL)")
    network = Network()
    relay = redis_server = None
    db = Database(settings.database_url)
    try:
        for name in ("a", "b"):
            network.add_host(name)
        gateway = network.gateway
        url = make_url(db.url if "://" in db.url else settings.database_url)
        relay = TcpRelay(gateway, (url.host or "127.0.0.1", url.port or 5432))
        host_db = url.set(host=gateway, port=relay.address[1]).render_as_string(hide_password=False)
        redis_server = EmbeddedRedis.start(None, host=gateway)
        env = {**os.environ, "GENQ_HOME": str(settings.home), "GENQ_DATABASE_URL": settings.database_url,
               "GENQ_REDIS_URL": redis_server.url, "GENQ_LEASE_SECONDS": "3", "GENQ_DISPATCH_TIMEOUT_SECONDS": "5",
               "GENQ_DB_IDLE_TRANSACTION_SECONDS": "3", "GENQ_DB_TCP_TIMEOUT_SECONDS": "3",
               "GENQ_TORCH_THREADS": "1", "GENQ_LOG_LEVEL": "INFO"}
        with db.session() as s:
            token = create_token(s, team="admin", role="admin")
        p = Hosts(env=env, home=settings.home, db=db, token=token)
        p.network = network
        p.host_env = {"GENQ_DATABASE_URL": host_db}
        yield p
    finally:
        if "p" in locals():
            p.stop()
        if redis_server is not None:
            redis_server.stop(kill=True)
        if relay is not None:
            relay.close()
        network.close()
        db.dispose()


def start_web(hosts: Hosts, **env: str) -> None:
    from genq.redis_server import free_port

    port = free_port()
    hosts.url = f"http://{hosts.network.gateway}:{port}"
    web = hosts.spawn("web", "--workers", "1", "--threads", "8", GENQ_HOST=hosts.network.gateway,
                      GENQ_PORT=str(port), **env)
    if not wait_until_serving(hosts.url, web):
        raise RuntimeError("the web server did not start:\n" + hosts.logs())


def job_row(hosts: Hosts, job_id: int) -> Job:
    with hosts.db.session() as s:
        return s.get(Job, job_id)


def lose_a_host_mid_job(hosts: Hosts, store_env: dict[str, str]) -> None:
    dataset = hosts.upload_text(CORPUS.read_text())
    hosts.start_scheduler()
    host_a = hosts.start_worker_on("a", **store_env)
    train = hosts.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": PARAMS})
    hosts.wait_for(lambda: (job_row(hosts, train).checkpoint_step or 0) >= 100, 120, "a checkpoint from host A")
    hosts.wait_for(lambda: job_row(hosts, train).step >= 130, 60, "steps past the checkpoint")
    hosts.network.cut("a")
    at_cut = job_row(hosts, train)
    assert at_cut.worker_id.startswith("genq-host-a:")
    with hosts.db.session() as s:
        last_metric = s.scalar(select(Metric.id).order_by(Metric.id.desc()).limit(1))
    hosts.start_worker_on("b", **store_env)
    job = hosts.wait_status(train, ("succeeded", "failed"), timeout=180)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    with hosts.db.session() as s:
        resumed = s.scalar(select(Metric).where(Metric.job_id == train, Metric.name == "train/loss",
                                                Metric.id > last_metric).order_by(Metric.id).limit(1))
        logs = list(s.scalars(select(JobLog.message).where(JobLog.job_id == train).order_by(JobLog.id)))
    assert any(line.startswith("attempt 2 started on genq-host-b:") for line in logs), logs
    # it went on from the checkpoint A had stored, not from scratch (nor from a later step A never stored)
    assert at_cut.checkpoint_step < resumed.step <= at_cut.checkpoint_step + PARAMS["checkpoint_interval"]

    # host A comes back: its run lost the lease, and nothing it writes now lands
    hosts.network.restore("a")

    def a_gave_up() -> bool:
        log = "".join(p.read_text(errors="replace") for p in hosts.home.glob("worker-a-*.log"))
        return f"job {train}: lease lost" in log or f"job {train}: transient failure" in log
    hosts.wait_for(a_gave_up, 90, "host A to notice it lost the job")
    time.sleep(3)
    final = job_row(hosts, train)
    assert (final.status, final.attempts) == ("succeeded", 2) and final.worker_id.startswith("genq-host-b:")
    with hosts.db.session() as s:
        checkpoint = s.scalar(select(Artifact).where(Artifact.job_id == train, Artifact.kind == "checkpoint"))
    assert checkpoint.path.startswith(f"jobs/{train}/a2/checkpoints/step-00000400/")

    # a generation job from it runs on either host, reading the model through the store
    generate = hosts.submit({"type": "generate", "source_job": train, "prompts": ["ROMEO:"],
                             "params": {"max_new_tokens": 16, "num_samples": 2}})
    job = hosts.wait_status(generate, ("succeeded", "failed"), timeout=90)
    assert job["status"] == "succeeded", job["error"]
    outputs = hosts.api("GET", f"/jobs/{generate}/outputs").json()["outputs"]
    assert len(outputs) == 2 and all(o["text"].startswith("ROMEO:") for o in outputs)
    host_a.send_signal(signal.SIGTERM)


def test_two_hosts_through_the_web_servers_store(hosts):
    start_web(hosts)
    with hosts.db.session() as s:
        worker_token = create_token(s, team="admin", role="worker")
    redis.Redis.from_url(hosts.env["GENQ_REDIS_URL"]).ping()
    lose_a_host_mid_job(hosts, {"GENQ_ARTIFACTS": hosts.url, "GENQ_TOKEN": worker_token})


def test_two_hosts_through_s3(hosts, tmp_path):
    with moto_server(tmp_path / "moto.log", host=hosts.network.gateway) as endpoint:
        store = {**S3_ENV, "GENQ_S3_ENDPOINT_URL": endpoint, "GENQ_ARTIFACTS": "s3://genq/two-hosts"}
        start_web(hosts, **store)
        lose_a_host_mid_job(hosts, store)
