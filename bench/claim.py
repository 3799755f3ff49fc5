"""The cost of the claim's host test (genq.worker.runner.WorkerContext.fits: does the job fit on this host's
unheld slots?), against the claim without it, alternating in one run on one SQLite database (a script, not a
test).

    .venv/bin/python bench/claim.py [--running 400] [--claims 2000]

The database holds 20,000 finished jobs, `--running` running ones spread over 4 worker processes of this host,
and queued jobs; each claim is the worker's UPDATE of one queued job in its own transaction. Prints the median
and p90 of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

from sqlalchemy import insert, select, update

from genq.db import Database, Job, Team, Worker
from genq.db.session import upgrade
from genq.worker.runner import WorkerContext


class _Pool:
    pool = "default"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--running", type=int, default=400)
    parser.add_argument("--claims", type=int, default=2000)
    args = parser.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp()}/claim.db"
    upgrade(url)
    db, host = Database(url), socket.gethostname()
    with db.session() as s:
        team = Team(name="t")
        s.add(team)
        s.flush()
        s.add_all([Worker(id=f"{host}:{i}:x", hostname=host, slots=1, pool="default", status="online")
                   for i in range(4)])
        job = dict(team_id=team.id, type="train", model="gpt", params={}, priority=0, gpus=1, pool="default",
                   max_attempts=3)
        s.execute(insert(Job), [{**job, "status": "succeeded"} for _ in range(20_000)])
        s.execute(insert(Job), [{**job, "status": "running", "worker_id": f"{host}:{i % 4}:x"}
                                for i in range(args.running)])
        s.execute(insert(Job), [{**job, "status": "queued"} for _ in range(args.claims)])
        queued = list(s.scalars(select(Job.id).where(Job.status == "queued")))
    fits = WorkerContext.fits.func(_Pool())  # built once a process, as the worker does (a cached property)
    took: dict[str, list[float]] = {"with the host test": [], "without": []}
    for n, job_id in enumerate(queued):
        tested = n % 2 == 0
        t0 = time.perf_counter()  # the statement is built in the timing, as the worker builds it at each claim
        where = [Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False)] + ([fits] if tested
                                                                                                else [])
        with db.session() as s:
            # "claimed": a status no query here reads, so the running jobs stay as many as --running
            assert s.execute(update(Job).where(*where).values(status="claimed")).rowcount == 1
        took["with the host test" if tested else "without"].append(time.perf_counter() - t0)
    medians = {}
    for name, times in took.items():
        medians[name] = statistics.median(times)
        print(f"{name}: median {medians[name] * 1e3:.2f} ms, p90 {sorted(times)[len(times) * 9 // 10] * 1e3:.2f} ms")
    print(f"ratio with / without: {medians['with the host test'] / medians['without']:.2f}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
