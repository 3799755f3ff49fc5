"""Dispatch speed through the real platform (`genq up`), against raw Celery on the same Redis in the same run.

Not part of the test suite. Starts a Redis server and `genq up` on it (SQLite, the scheduler, one CPU worker,
the web), trains one tiny gpt as a job, then measures:

1. submit-to-running on an idle worker: N generation jobs one after another, each submitted once the last has
   ended; the time from just before the POST to the row's started_at (the worker's claim). Peer: one raw
   Celery round trip (send a no-op task, get its result) on the same Redis, with a solo worker.
2. throughput: M tiny generation jobs (5 new tokens each) submitted at once, from the first POST to the last
   job's end. Peer: M raw Celery round trips one after another. On Linux, the CPU each process spent per job
   over it (the web, the scheduler, the worker, Redis, this script's clients).

Then it reads the rows: every job succeeded, was claimed once (attempts 1, one "attempt ... started" log line).
It exits 1 when a row is wrong or a goal of issue 12 is missed (p50 < 300 ms, p99 < 1 s, >= 25 jobs/s).

    .venv/bin/python bench/dispatch.py                       # 50 latency jobs, 200 throughput jobs
    .venv/bin/python bench/dispatch.py --latency 10 --jobs 40  # a quick run
    .venv/bin/python bench/dispatch.py --database-url postgresql://postgres@127.0.0.1:5432/genq_bench  # empty DB
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import func, select

from genq.client import Client
from genq.db import Database, Job, JobLog
from genq.redis_server import EmbeddedRedis
from genq.worker.celery_app import make_celery

sys.path.insert(0, str(Path(__file__).parent))
from quality import platform_cpu, start_platform  # noqa: E402 - a sibling script, not a package

TINY_GPT = dict(tokenizer="char", n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, max_steps=20,
                eval_interval=20, eval_iters=2, checkpoint_interval=20, warmup_steps=2)
GENERATE = dict(max_new_tokens=5, num_samples=1, temperature=0.8)
PEER_QUEUE = "bench.peer"
FINISHED = ("succeeded", "failed", "cancelled")
GOALS = {50: 0.300, 99: 1.0}  # submit-to-running seconds at these percentiles (issue 12)
GOAL_RATE = 25.0  # tiny generation jobs a second through one CPU worker

peer = make_celery(os.environ.get("GENQ_BENCH_REDIS_URL"))
peer.conf.update(result_backend=peer.conf.broker_url, task_ignore_result=False)


@peer.task(name="bench.noop", ignore_result=False)
def noop() -> int:
    """The peer's task: nothing, so a round trip is Celery and Redis alone."""
    return 1


def start_peer_worker(home: Path, redis_url: str) -> subprocess.Popen:
    """A solo-pool Celery worker for the no-op task, as genq's workers run (one process, prefetch off)."""
    log = open(home / "peer.log", "wb")  # noqa: SIM115 - the peer worker's output
    argv = [sys.executable, "-m", "celery", "-A", "dispatch:peer", "worker", "--pool", "solo", "--queues",
            PEER_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    env = {**os.environ, "GENQ_BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def peer_round_trips(n: int) -> list[float]:
    """Seconds of each of `n` sequential round trips (send the no-op, wait for its result)."""
    noop.apply_async(queue=PEER_QUEUE).get(timeout=120)  # the worker is up and connected
    times = []
    for _ in range(n):
        start = time.perf_counter()
        noop.apply_async(queue=PEER_QUEUE).get(timeout=30)
        times.append(time.perf_counter() - start)
    return times


class Finishes:
    """Job status events (genq:jobs:*) as they come, to wait for a job without polling; rows stay the record."""

    def __init__(self, redis_url: str):
        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("genq:jobs:*")
        self.done: set[int] = set()

    def wait(self, client: Client, ids: set[int], timeout: float) -> None:
        """Until every job in `ids` finished; the API is asked when no event came for a second."""
        deadline = time.monotonic() + timeout
        while not ids <= self.done:
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs {sorted(ids - self.done)[:10]} did not finish in {timeout} s")
            message = self.pubsub.get_message(timeout=1.0)
            if message is None:  # an event lost in Redis: the row says
                self.done |= {i for i in ids - self.done if client.job(i)["status"] in FINISHED}
                continue
            event = json.loads(message["data"])
            if event["event"] == "status" and event["data"]["status"] in FINISHED:
                self.done.add(event["job"])


def generate_job(source: int) -> dict:
    return {"type": "generate", "source_job": source, "prompts": ["The "], "params": GENERATE}


def unix(row_time: datetime) -> float:
    """A naive UTC datetime from the database as a Unix time."""
    return row_time.replace(tzinfo=UTC).timestamp()


def latency(client: Client, db: Database, finishes: Finishes, source: int, n: int) -> list[tuple[float, ...]]:
    """For `n` jobs, each submitted to an idle worker, the seconds from just before the POST to the row's
    creation, its dispatch and its claim (the submit-to-running time)."""
    out = []
    for _ in range(n):
        submitted = time.time()
        job_id = client.submit(generate_job(source))["id"]
        finishes.wait(client, {job_id}, 60)
        with db.session() as s:
            job = s.get(Job, job_id)
            out.append(tuple(unix(t) - submitted for t in (job.created_at, job.dispatched_at, job.started_at)))
    return out


def throughput(client: Client, finishes: Finishes, source: int, n: int) -> tuple[list[int], float]:
    """Submit `n` jobs at once (four HTTP clients); their ids and the seconds from the first POST to the last end."""
    clients = [Client(client.url, client.session.headers["Authorization"].split()[1]) for _ in range(4)]
    start = time.monotonic()
    with ThreadPoolExecutor(len(clients)) as pool:
        ids = list(pool.map(lambda i: clients[i % len(clients)].submit(generate_job(source))["id"], range(n)))
    finishes.wait(client, set(ids), 600)
    return ids, time.monotonic() - start


def check_rows(db: Database, ids: list[int]) -> list[str]:
    """What is wrong with the rows of `ids`: not succeeded, claimed more than once."""
    problems = []
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.status, Job.attempts).where(Job.id.in_(ids))).all()
        claims = dict(s.execute(select(JobLog.job_id, func.count()).where(
            JobLog.job_id.in_(ids), JobLog.message.like("attempt % started on %")).group_by(JobLog.job_id)).all())
    for job_id, status, attempts in rows:
        if status != "succeeded" or attempts != 1 or claims.get(job_id) != 1:
            problems.append(f"job {job_id}: {status}, attempts {attempts}, claims {claims.get(job_id, 0)}")
    if len(rows) != len(ids):
        problems.append(f"{len(ids) - len(rows)} jobs have no row")
    return problems


def cycle(db: Database, ids: list[int]) -> tuple[float, float, float]:
    """Medians, in seconds, of a throughput job's cycle on the worker, from its row's timestamps in claim order:
    the previous job's end to this one's dispatch, the dispatch to the claim, the claim to the end."""
    with db.session() as s:
        rows = s.execute(select(Job.dispatched_at, Job.started_at, Job.finished_at).where(Job.id.in_(ids))
                         .order_by(Job.started_at)).all()
    times = [tuple(map(unix, row)) for row in rows]
    gaps = [(d - prev[2], c - d, f - c) for prev, (d, c, f) in zip(times, times[1:], strict=False) if d > prev[2]]
    return tuple(statistics.median(g[i] for g in gaps) if gaps else float("nan") for i in range(3))


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=int, default=50, help="jobs for submit-to-running on an idle worker")
    ap.add_argument("--jobs", type=int, default=200, help="jobs for the throughput figure")
    ap.add_argument("--database-url", help="an empty database for the platform (default: SQLite in its home)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(os.environ.get("GENQ_BENCH_HOME") or tmp)
        home.mkdir(parents=True, exist_ok=True)
        server = EmbeddedRedis.start(data_dir=home / "redis")  # as `genq up` starts its own: append-only file on
        peer.conf.update(broker_url=server.url, result_backend=server.url)
        database_url = args.database_url or f"sqlite:///{home / 'genq.db'}"
        platform, client = start_platform(home, GENQ_REDIS_URL=server.url, GENQ_DATABASE_URL=database_url)
        db = Database(database_url)
        peer_worker = start_peer_worker(home, server.url)
        try:
            finishes = Finishes(server.url)
            train = client.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": TINY_GPT})["id"]
            finishes.wait(client, {train}, 600)
            if (status := client.job(train)["status"]) != "succeeded":
                raise SystemExit(f"the training job {train} {status}; see {home / 'up.log'}")
            warm = client.submit(generate_job(train))["id"]  # the worker has loaded the model once
            finishes.wait(client, {warm}, 60)

            stages = latency(client, db, finishes, train, args.latency)
            peer_single = peer_round_trips(args.latency)

            def used() -> dict[str, float]:
                return {**platform_cpu(platform.pid), **platform_cpu(server.process.pid),
                        "this script": time.process_time()}

            before = used()
            ids, seconds = throughput(client, finishes, train, args.jobs)
            after = used()
            cpu = {name: (after[name] - before.get(name, 0.0)) / len(ids) for name in after}
            peer_seconds = sum(peer_round_trips(args.jobs))
            problems = check_rows(db, ids)
            stages_of_cycle = cycle(db, ids)
        finally:
            platform.send_signal(signal.SIGINT)
            peer_worker.terminate()
            platform.wait(120)
            peer_worker.wait(30)
            server.stop()
    ms, missed, waits = 1000, [], [claimed for _, _, claimed in stages]
    print(f"machine: {os.cpu_count()} cores; one CPU worker (genq up), {database_url.split(':')[0]}, "
          "Redis on localhost")
    for q, goal in GOALS.items():
        ours, theirs = pct(waits, q), pct(peer_single, q)
        missed += [f"p{q} {ours * ms:.0f} ms"] if ours >= goal else []
        print(f"submit-to-running p{q} over {len(waits)} jobs: {ours * ms:7.1f} ms (goal < {goal * ms:.0f})   "
              f"raw Celery round trip p{q}: {theirs * ms:5.1f} ms   ratio {ours / theirs:5.1f}x")
    rate, peer_rate = len(ids) / seconds, args.jobs / peer_seconds
    missed += [f"{rate:.1f} jobs/s"] if rate < GOAL_RATE else []
    print(f"throughput of {len(ids)} tiny generation jobs: {rate:6.1f} jobs/s (goal >= {GOAL_RATE:.0f})   "
          f"raw Celery: {peer_rate:6.1f} round trips/s   ratio {rate / peer_rate:.3f}")
    print(f"mean submit-to-running {statistics.mean(waits) * ms:.1f} ms; {seconds:.1f} s for {len(ids)} jobs")
    slowest = max(stages, key=lambda t: t[2])
    print("from the POST, median (slowest job): row inserted {:.1f} ({:.1f}) ms, dispatched {:.1f} ({:.1f}) ms, "
          "claimed {:.1f} ({:.1f}) ms".format(
              *(v * ms for i in range(3) for v in (statistics.median(t[i] for t in stages), slowest[i]))))
    print("a throughput job's cycle, medians: previous end to dispatch {:.1f} ms, dispatch to claim {:.1f} ms, "
          "claim to end {:.1f} ms (jobs dispatched after the previous end)".format(*(v * ms for v in stages_of_cycle)))
    if cpu:  # what each process spent per job: on 2 cores, the sum bounds the rate
        print(f"CPU per throughput job ({os.cpu_count()} cores): " + ", ".join(
            f"{name} {c * ms:.1f} ms" for name, c in sorted(cpu.items(), key=lambda kv: -kv[1]) if c * ms >= 0.05)
            + f"; {sum(cpu.values()) * ms:.1f} ms in all")
    if problems:
        print("rows wrong:\n  " + "\n  ".join(problems))
    else:
        print(f"rows: all {len(ids)} succeeded, each claimed once (attempts 1)")
    if missed:
        print("missed: " + ", ".join(missed))
    return 1 if problems or missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
