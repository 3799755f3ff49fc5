"""Scheduling on a simulated clock: the REAL policy (genq.jobs.policy.plan and forecast) against FIFO, in the
same run, on the same workload; then the live scheduler's time per decision with 10,000 queued jobs in SQLite
and PostgreSQL (bench/scheduling_db.py).

The workload: a bursty week of three teams with weights 1:2:3 on 8 GPUs (two workers of 4), each team sending (in
proportion to its weight) bursts of 1-, 2- and 4-GPU jobs (60/25/15 %) with log-normal run times (median 40 min);
together they ask about 90 % of the week's GPU-hours, in bursts, so queues form and drain. The policy sees a
queued job's expected run time with a log-normal error (sigma 0.3), as the live model (recent runs of the same
model) would; a running job's, once it has run 5 minutes, with an error of sigma 0.05, as the live model (its own
step rate) would. Running jobs checkpoint every 10 minutes; a preempted job loses the work since its last
checkpoint and rejoins the queue keeping its age.

Printed side by side (fair share | FIFO): GPU utilisation while jobs wait (goal >= 95 %); Jain's fairness index
(goal >= 0.95) of each team's GPU-time received / owed while jobs wait, where a team is owed its weight's share
of the GPUs among the teams that want GPUs (running or queued jobs), never more than it asks, what that leaves
split again among the others (fairness is owed only to teams that want GPUs: an idle team's share is lent),
over the whole week, so that a team paying back borrowed time, as decayed usage makes it, is not counted unfair
(printed below it, the definition used before: GPU-time / weight while all three teams have jobs queued); mean
and p95 wait per team; the longest wait of a 4-GPU job (goal: no longer than FIFO's); preemptions; and
(fair share only: FIFO has no forecast) the median absolute error of the ETA each job was given when submitted.
Then the same goals for more weeks (other seeds, ten in all by default), one line each. Exits 1 when a goal
of the first week is missed.

    .venv/bin/python bench/scheduling.py                 # the week, then SQLite and PostgreSQL decisions
    .venv/bin/python bench/scheduling.py --days 2 --no-db --seeds 1
    .venv/bin/python bench/scheduling.py --no-db --half-life 8    # another GENQ_USAGE_HALF_LIFE_HOURS
    .venv/bin/python bench/scheduling.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace

from genq.jobs.policy import forecast, plan
from genq.jobs.pool import Node, Running, Snapshot, TeamState, Waiting, decay

WEIGHTS = {"a": 1.0, "b": 2.0, "c": 3.0}
NODES = [Node("w0", 4), Node("w1", 4)]
HALF_LIFE_HOURS = 24.0
CHECKPOINT_SECONDS = 600.0
PREEMPT_MIN_RUN = 300.0
STOP_SECONDS = 30.0  # a preempted job's checkpoint and exit
RATE_SECONDS = 300.0  # a run's first minutes: then its step rate times the rest (genq.jobs.snapshot.step_rates)
LOAD = 0.9  # the GPU-hours asked over the period, as a fraction of those the GPUs have


@dataclass
class SimJob:
    id: int
    team: str
    gpus: int
    submitted: float
    work: float  # seconds of work still to do
    error: float  # what the policy expects a run to take / what it takes, before the run shows its step rate
    rate_error: float = 1.0  # the same, once it has run RATE_SECONDS (the live ETA times steps as they go)
    started: float | None = None  # this run's start
    first_start: float | None = None
    node: str | None = None
    eta: float | None = None  # forecast at submission
    preemptions: int = 0
    stopping: bool = False


def workload(days: float, seed: int) -> list[SimJob]:
    """Bursts of jobs from three teams asking ~110 % of the GPUs' time."""
    rng = random.Random(seed)
    horizon = days * 86400.0
    capacity = sum(n.slots for n in NODES) * horizon
    jobs: list[SimJob] = []
    burst = 22.5 * 1.7 * 2400.0 * 1.35  # mean jobs x mean GPUs x mean run time of a burst, GPU-seconds
    for team, weight in WEIGHTS.items():
        per_team = LOAD * capacity * weight / sum(WEIGHTS.values())  # a team's weight follows its size
        t = rng.expovariate(per_team / burst / horizon)
        while t < horizon:
            for _ in range(rng.randint(5, 40)):  # a burst: a sweep of runs within minutes
                gpus = rng.choices([1, 2, 4], [60, 25, 15])[0]
                run = min(rng.lognormvariate(0, 0.8) * 2400.0, 8 * 3600.0)
                jobs.append(SimJob(0, team, gpus, t + rng.uniform(0, 600), run, rng.lognormvariate(0, 0.3)))
            t += rng.expovariate(per_team / burst / horizon)
    jobs.sort(key=lambda j: j.submitted)
    rates = random.Random(seed + 1)
    for i, job in enumerate(jobs, 1):
        job.id, job.rate_error = i, rates.lognormvariate(0, 0.05)
    return jobs


def owed_shares(wants: dict[str, int], capacity: int) -> dict[str, float]:
    """The GPUs each team is owed: `capacity` split by weight among the teams that want some, none given beyond
    what a team wants (its running and queued jobs' GPUs), what that leaves over split again (water-filling)."""
    owed = dict.fromkeys(wants, 0.0)
    left, open_ = float(capacity), {t for t, n in wants.items() if n > 0}
    while open_ and left > 1e-9:
        total = sum(WEIGHTS[t] for t in open_)
        sated = {t for t in open_ if wants[t] - owed[t] <= left * WEIGHTS[t] / total}
        if not sated:
            for t in open_:
                owed[t] += left * WEIGHTS[t] / total
            break
        for t in sated:
            left -= wants[t] - owed[t]
            owed[t] = float(wants[t])
        open_ -= sated
    return owed


UTIL, JAIN = "utilisation while jobs wait", "Jain index, GPU-time received / owed"
BIG = "longest wait of a 4-GPU job, h"
OLD = "  (before: GPU-time / weight, all waiting)"


def jain(x: list[float]) -> float:
    """Jain's fairness index of `x`: 1 when all are equal, 1/len(x) when one has everything."""
    return sum(x) ** 2 / (len(x) * sum(v * v for v in x)) if any(x) else 1.0


class Simulation:
    """A cluster on a simulated clock, driven by a policy: 'fair' (genq's plan) or 'fifo'."""

    def __init__(self, jobs: list[SimJob], policy: str, eta: bool, half_life: float = HALF_LIFE_HOURS):
        self.jobs = [replace(j) for j in jobs]
        self.policy, self.want_eta = policy, eta
        self.half_life = half_life  # of each team's decayed usage, hours
        self.now = 0.0
        self.queue: dict[int, SimJob] = {}
        self.running: dict[int, SimJob] = {}
        self.usage = dict.fromkeys(WEIGHTS, 0.0)
        self.busy_waiting = self.time_waiting = 0.0  # GPU-seconds busy / seconds, while a job waits
        self.received = dict.fromkeys(WEIGHTS, 0.0)  # GPU-seconds per team while jobs wait
        self.owed = dict.fromkeys(WEIGHTS, 0.0)  # its weighted share of them, among the teams that want GPUs
        self.contended = dict.fromkeys(WEIGHTS, 0.0)  # GPU-seconds per team while all teams wait
        self.waits: dict[str, list[float]] = {t: [] for t in WEIGHTS}
        self.big_waits: list[float] = []
        self.eta_errors: list[float] = []
        self.preemptions = 0
        self.decisions: list[float] = []

    def advance(self, t: float) -> None:
        dt = t - self.now
        if dt <= 0:
            return
        held = {team: 0 for team in WEIGHTS}
        for job in self.running.values():
            held[job.team] += job.gpus
        for team in WEIGHTS:
            self.usage[team] = decay(self.usage[team], dt, self.half_life) + held[team] * dt
        if self.queue:
            self.time_waiting += dt
            self.busy_waiting += sum(held.values()) * dt
            wants = dict(held)
            for job in self.queue.values():
                wants[job.team] += job.gpus
            for team, share in owed_shares(wants, sum(n.slots for n in NODES)).items():
                self.received[team] += held[team] * dt
                self.owed[team] += share * dt
        if {j.team for j in self.queue.values()} == set(WEIGHTS):
            for team in WEIGHTS:
                self.contended[team] += held[team] * dt
        self.now = t

    def snapshot(self) -> Snapshot:
        running = []
        for job in self.running.values():
            ran = self.now - job.started
            end = job.started + job.work * (job.rate_error if ran >= RATE_SECONDS else job.error)
            running.append(Running(job.id, job.team, job.gpus, job.node, 0, job.started,
                                   max(end, self.now + 60), True, ran % CHECKPOINT_SECONDS, job.stopping))
        queue = [Waiting(j.id, j.team, 0, j.submitted, j.gpus, j.work * j.error) for j in self.queue.values()]
        teams = {t: TeamState(t, w, self.usage[t]) for t, w in WEIGHTS.items()}
        return Snapshot(self.now, NODES, running, queue, teams, min_run_seconds=PREEMPT_MIN_RUN)

    def fifo(self) -> list[tuple[int, str]]:
        """First come, first served: each job in arrival order that fits a worker now starts (first fit)."""
        free = {n.id: n.slots for n in NODES}
        for job in self.running.values():
            free[job.node] -= job.gpus
        starts = []
        for job in sorted(self.queue.values(), key=lambda j: (j.submitted, j.id)):
            node = next((n for n, f in free.items() if f >= job.gpus), None)
            if node is not None:
                free[node] -= job.gpus
                starts.append((job.id, node))
        return starts

    def run(self) -> Simulation:
        events: list[tuple[float, int, str, int]] = []  # (time, order, kind, job)
        seq = 0
        for job in self.jobs:
            heapq.heappush(events, (job.submitted, seq, "arrive", job.id))
            seq += 1
        by_id = {j.id: j for j in self.jobs}
        while events:
            t, _, kind, job_id = heapq.heappop(events)
            self.advance(t)
            job = by_id[job_id]
            if kind == "arrive":
                self.queue[job_id] = job
                if self.want_eta:
                    job.eta = forecast(self.snapshot(), limit=None).get(job_id).eta
            elif kind == "end" and job_id in self.running and not job.stopping:
                del self.running[job_id]
            elif kind == "stop" and job_id in self.running:  # preempted: back to the queue, keeping its age
                ran = self.now - job.started - STOP_SECONDS
                job.work -= ran - ran % CHECKPOINT_SECONDS  # what was checkpointed is kept
                job.stopping, job.started, job.node = False, None, None
                del self.running[job_id]
                self.queue[job_id] = job
            else:
                continue
            while events and events[0][0] == t and events[0][2] == "arrive":  # a burst: decide once for all
                _, _, _, other = heapq.heappop(events)
                self.queue[other] = by_id[other]
            tick = time.perf_counter()
            if self.policy == "fair":
                decision = plan(self.snapshot())
                starts = decision.starts
                for victim in decision.preempt:
                    self.running[victim].stopping = True
                    self.preemptions += 1
                    by_id[victim].preemptions += 1
                    heapq.heappush(events, (self.now + STOP_SECONDS, seq, "stop", victim))
                    seq += 1
            else:
                starts = self.fifo()
            self.decisions.append(time.perf_counter() - tick)
            for started, node in starts:
                job = self.queue.pop(started)
                job.started, job.node = self.now, node
                if job.first_start is None:
                    job.first_start = self.now
                    wait = self.now - job.submitted
                    self.waits[job.team].append(wait)
                    if job.gpus == 4:
                        self.big_waits.append(wait)
                    if job.eta is not None:
                        self.eta_errors.append(abs(job.eta - self.now))
                self.running[started] = job
                heapq.heappush(events, (self.now + job.work, seq, "end", started))
                seq += 1
        return self

    def report(self) -> dict[str, float]:
        out = {UTIL: self.busy_waiting / max(self.time_waiting, 1e-9) / 8,
               JAIN: jain([self.received[t] / self.owed[t] for t in WEIGHTS if self.owed[t] > 0]),
               OLD: jain([self.contended[t] / w for t, w in WEIGHTS.items()])}
        for team in WEIGHTS:
            waits = sorted(self.waits[team]) or [0.0]
            out[f"team {team} (w {WEIGHTS[team]:g}) mean wait, h"] = statistics.fmean(waits) / 3600
            out[f"team {team} (w {WEIGHTS[team]:g}) p95 wait, h"] = waits[int(0.95 * (len(waits) - 1))] / 3600
        out[BIG] = max(self.big_waits, default=0.0) / 3600
        out["preemptions"] = float(self.preemptions)
        out["ETA median abs error, h"] = statistics.median(self.eta_errors) / 3600 if self.eta_errors else float("nan")
        out["policy time per decision, ms (median)"] = statistics.median(self.decisions) * 1000
        return out


def missed(fair: dict[str, float], fifo: dict[str, float]) -> list[str]:
    """The goals fair share misses in one week."""
    out = []
    if fair[UTIL] < 0.95:
        out.append("utilisation while jobs wait < 95 %")
    if fair[JAIN] < 0.95:
        out.append("Jain index < 0.95")
    if fair[BIG] > fifo[BIG]:
        out.append("a 4-GPU job waited longer than under FIFO")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=10, help="weeks simulated, from --seed on")
    parser.add_argument("--half-life", type=float, default=HALF_LIFE_HOURS, help="of a team's usage, hours")
    parser.add_argument("--no-db", action="store_true", help="skip the database decision timings")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server to create a scratch database on ('' to skip)")
    args = parser.parse_args()
    jobs = workload(args.days, args.seed)
    asked = sum(j.gpus * j.work for j in jobs) / (8 * args.days * 86400)
    print(f"{len(jobs)} jobs over {args.days:g} days from teams {WEIGHTS} on 2 x 4 GPUs; they ask {asked:.0%} "
          f"of the GPU time")
    began = time.perf_counter()
    fair = Simulation(jobs, "fair", eta=True, half_life=args.half_life).run().report()
    fifo = Simulation(jobs, "fifo", eta=False).run().report()
    print(f"(simulated in {time.perf_counter() - began:.1f} s)\n")
    print(f"{'':42} {'fair share':>12} {'FIFO':>12}")
    for key in fair:
        print(f"{key:42} {fair[key]:>12.3f} {fifo[key]:>12.3f}")
    failed = missed(fair, fifo)
    if args.seeds > 1:
        print(f"\n{'seed':>4} {'utilisation':>18} {'Jain index':>18} {'longest 4-GPU wait, h':>22} {'before':>6}"
              "  goals missed")
        for seed in range(args.seed, args.seed + args.seeds):
            week = workload(args.days, seed)
            f, g = (Simulation(week, policy, eta=False, half_life=args.half_life).run().report()
                    for policy in ("fair", "fifo"))
            print(f"{seed:>4} {f[UTIL]:>8.3f} | {g[UTIL]:<7.3f} {f[JAIN]:>8.3f} | {g[JAIN]:<7.3f} "
                  f"{f[BIG]:>10.1f} | {g[BIG]:<9.1f} {f[OLD]:>6.3f}  {'; '.join(missed(f, g)) or '-'}")
        print("(each column: fair share | FIFO; before: fair share's index by the definition used before)")
    if not args.no_db:
        from scheduling_db import DECISION, decision_times  # bench/ is on the path: this script runs from it

        for name, ms in decision_times(args.database_url).items():
            print(f"\n{name}")
            for key, value in ms.items():
                print(f"  {key:76} {value:8.2f} ms")
            if ms[DECISION] >= 5.0:
                failed.append(f"{name}: a decision takes >= 5 ms")
    for goal in failed:
        print("MISSED:", goal)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
