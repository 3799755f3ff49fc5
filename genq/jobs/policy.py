"""The scheduling policy as a pure function: a snapshot of one pool in, decisions out.

`plan(snapshot)` says which queued jobs start now (on which worker), which running jobs to preempt, and which
big jobs hold a reservation; `forecast(snapshot)` plays the same picking forward on expected run times to give
every queued job its position, expected start and the reason it waits. The live scheduler (worker/scheduler.py)
builds snapshots (genq.jobs.pool's types) from SQL; bench/scheduling.py builds them on a simulated clock. No
database, no clock here.

The order, for each free slot:
1. teams owed a whole slot of their share of the pool first (share = the pool's slots x weight / the weights of
   the teams with jobs in the pool; owed: its running devices + 1 fit in it): a team may borrow idle slots, but
   not ahead of a team that wants its own share back;
2. among those (or among the borrowers), the team with the least (decayed usage + expected remaining use of its
   running jobs) / weight;
3. within a team, the job of highest priority, then the oldest.
A team at its quota (devices at once, or GPU-hours this week) waits; a job wider than its team's max_gpus
waits aside (holding back no job, counting for no share) until the quota is raised or it is cancelled. A job of
N devices needs N free slots of ONE worker; when none has them (or none online is that wide) it steps aside for
its team's narrower jobs.
After 30 min a wide job reserves the worker whose slots would idle least until they are free (one at a time: the
team first in fair-share order, or the oldest after 12 h of a team below its share); until it starts only jobs
expected to end before then start there (backfill: a team's longer jobs step aside for its shorter ones), so
small jobs do not starve it.
"""

from __future__ import annotations

import heapq
from collections import deque

from genq.jobs.pool import Forecast, Plan, Running, Snapshot, TeamState, Waiting

BACKFILL_DEPTH = 16  # a team's jobs set aside per round (too wide, or too long to backfill) before it stops


def _job_order(job: Waiting) -> tuple:
    return (-job.priority, job.created_at, job.id)


def _jobs(n: int) -> str:
    return "1 job" if n == 1 else f"{n} jobs"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


class _Allocator:
    """The state one round of picking reads and changes: free slots, each team's queue, use and share."""

    def __init__(self, snap: Snapshot):
        self.snap, self.now = snap, snap.now
        self.slots = {n.id: n.slots for n in snap.nodes}
        self.capacity = sum(self.slots.values())
        self.widest = max(self.slots.values(), default=0)
        self.free = dict(self.slots)
        self.ends: list[tuple[float, str, int, str]] = []  # heap of (expected end, node, gpus, team)
        self.running_gpus: dict[str, int] = {}
        self.charged: dict[str, float] = {name: t.usage for name, t in snap.teams.items()}
        for job in snap.running:
            self._occupy(job.team, job.gpus, job.node, job.expected_end, already=True)
        self.queues: dict[str, deque[Waiting]] = {}
        self.never: dict[Waiting, str] = {}  # jobs wider than their team's max_gpus, and why they wait
        for job in sorted(snap.queue, key=_job_order):
            cap = self._team(job.team).max_gpus
            if cap is not None and job.gpus > cap:
                self.never[job] = (f"needs {_gpus(job.gpus)}, more than team {job.team} may hold at once (max_gpus "
                                   f"{cap}): it can never start under this quota; raise max_gpus or cancel it")
            else:
                self.queues.setdefault(job.team, deque()).append(job)
        # A team whose week of GPU-hours is spent can start nothing: it takes no share from the others.
        busy = {t for t in self.queues if not self._hours_spent(t)} | set(self.running_gpus)
        total = sum(self._team(t).weight for t in busy) or 1.0
        self.share = {t: self.capacity * self._team(t).weight / total for t in busy}
        self.reservations: dict[str, tuple[float, int]] = {}  # node -> (time, job)
        self.reserved_gpus: dict[int, int] = {}  # job -> devices it reserved

    def _team(self, name: str) -> TeamState:
        return self.snap.teams.get(name) or TeamState(name)

    def _hours_spent(self, name: str) -> bool:
        team = self._team(name)
        return team.gpu_hours_per_week is not None and team.week_gpu_hours >= team.gpu_hours_per_week

    def expected(self, seconds: float | None) -> float:
        return self.snap.default_run_seconds if seconds is None else max(seconds, 0.0)

    def _occupy(self, team: str, gpus: int, node: str | None, end: float | None, already: bool = False) -> None:
        if node is None:  # sent, not yet claimed: it takes room on the emptiest worker
            node = max(self.free, key=self.free.get, default=None)
        elif node not in self.free:  # running on a host that takes no new job (draining): none of theirs held
            node = None
        if node is not None:
            self.free[node] -= gpus
            end = max(end if end is not None else self.now + self.snap.default_run_seconds, self.now)
            heapq.heappush(self.ends, (end, node, gpus, team))
            if already:
                self.charged[team] = self.charged.get(team, 0.0) + gpus * (end - self.now)
        self.running_gpus[team] = self.running_gpus.get(team, 0) + gpus

    def release_until(self, t: float) -> None:
        """Jobs expected to end by `t` give back their slots (forecast only)."""
        while self.ends and self.ends[0][0] <= t:
            _, node, gpus, team = heapq.heappop(self.ends)
            self.free[node] += gpus
            self.running_gpus[team] -= gpus

    def key(self, team: str) -> tuple:
        """Fair-share order: teams owed a whole slot of their share first (a team whose share is 1.3 and runs 1
        is owed 0.3 of one, settled by decayed usage among the borrowers), then the least usage per weight."""
        weight = self._team(team).weight or 1.0
        owed = self.running_gpus.get(team, 0) + 1 <= self.share.get(team, 0.0) + 1e-9
        return (0 if owed else 1, self.charged.get(team, 0.0) / weight, team)

    def below_share(self, team: str) -> bool:
        """Whether `team` runs fewer devices than its share."""
        return self.running_gpus.get(team, 0) < self.share.get(team, 0.0) - 1e-9

    def blocked_by_quota(self, job: Waiting) -> str | None:
        team = self._team(job.team)
        if team.max_gpus is not None and self.running_gpus.get(job.team, 0) + job.gpus > team.max_gpus:
            return f"team {team.name} is at its quota of {_gpus(team.max_gpus)}"
        if self._hours_spent(job.team):
            return (f"team {team.name} has used its {team.gpu_hours_per_week:g} GPU-hours of the last 7 days "
                    f"({team.week_gpu_hours:.3g} used)")
        return None

    def place(self, job: Waiting) -> str | None:
        """The worker to start `job` on now (the fullest that fits, to keep whole workers free), or None."""
        end = self.now + self.expected(job.expected_seconds)
        best = None
        for node, free in self.free.items():
            if free < job.gpus:
                continue
            held = self.reservations.get(node)
            if held is not None and held[1] != job.id:
                ends_in_time = job.expected_seconds is not None and end <= held[0]
                if not ends_in_time and not self._spare(node, job.gpus):
                    continue  # it would delay the big job this worker is kept for
            if best is None or free < self.free[best]:
                best = node
        return best

    def _spare(self, node: str, gpus: int) -> bool:
        """Whether `node` has `gpus` slots beyond what its reservation will need when it starts."""
        when, job_id = self.reservations[node]
        need = self.reserved_gpus[job_id]
        freed_by_then = sum(g for end, n, g, _ in self.ends if n == node and end <= when)
        return self.free[node] - gpus + freed_by_then >= need

    def earliest(self, gpus: int) -> tuple[str, float] | None:
        """The unreserved worker to keep for a job of `gpus` devices, and when they are expected free: the one
        whose slots would idle least meanwhile (free slots x time until the rest frees up), then the soonest."""
        best, least = None, None
        for node in self.free:
            if node in self.reservations or self.slots[node] < gpus:
                continue
            free, when, idle = self.free[node], self.now, 0.0
            for end, _node, g, _team in sorted(e for e in self.ends if e[1] == node):
                if free >= gpus:
                    break
                idle += free * (end - when)
                free, when = free + g, end
            if free >= gpus and (least is None or (idle, when) < least):
                best, least = (node, when), (idle, when)
        return best

    def reserve(self, reserved: dict[int, tuple[str, float]] | None) -> None:
        """Keep a worker for one wide job first in its team's line, once it has waited reserve_after_seconds: the
        team first in fair-share order, or the oldest that waited starving_after_seconds of a team below its share
        (one reservation at a time: each idles slots until it starts). Its room, once free, stays kept until its
        team's turn: other teams' narrow jobs, picked first, would take it again."""
        if self.reservations:
            return
        first = None
        for queue in self.queues.values():
            job = queue[0] if queue else None
            if (job is None or job.gpus <= 1 or job.gpus > self.widest or self.blocked_by_quota(job)
                    or self.now - job.created_at < self.snap.reserve_after_seconds):
                continue
            if first is None or self._reserve_order(job) < self._reserve_order(first):
                first = job
        spot = self.earliest(first.gpus) if first is not None else None
        if spot is not None:
            self.reservations[spot[0]] = (spot[1], first.id)
            self.reserved_gpus[first.id] = first.gpus
            if reserved is not None:
                reserved[first.id] = spot

    def _reserve_order(self, job: Waiting) -> tuple:
        # Starving jumps the fair-share order only for a team below its share: a team over it that jumped would
        # keep the reserved worker from the teams it owes (Jain 0.86 in one simulated week).
        starving = self.now - job.created_at >= self.snap.starving_after_seconds and self.below_share(job.team)
        return (not starving, () if starving else self.key(job.team), job.created_at, job.id)

    def start(self, job: Waiting, node: str) -> None:
        self.queues[job.team].popleft()
        self.reservations = {n: r for n, r in self.reservations.items() if r[1] != job.id}
        self._occupy(job.team, job.gpus, node, self.now + self.expected(job.expected_seconds))
        self.charged[job.team] = self.charged.get(job.team, 0.0) + job.gpus * self.expected(job.expected_seconds)

    def pick(self, reasons: dict[int, str] | None = None,
             reserved: dict[int, tuple[str, float]] | None = None) -> list[tuple[Waiting, str]]:
        """Start every job that may start now, in fair-share order; note why each team's first job waits."""
        started: list[tuple[Waiting, str]] = []
        held: dict[str, list[Waiting]] = {}  # wide jobs set aside while the rest of their team is tried
        self.reserve(reserved)
        heap = [(self.key(t), t) for t, q in self.queues.items() if q]
        heapq.heapify(heap)
        while heap:
            _, team = heapq.heappop(heap)
            queue, aside = self.queues[team], held.setdefault(team, [])
            room = max(self.free.values(), default=0)  # the most free slots of a worker: wider jobs fit nowhere
            while queue:  # the team's first job that starts, if any (its key stays the least meanwhile)
                job = queue[0]
                why = self.blocked_by_quota(job)
                too_wide = why is None and job.gpus > self.widest
                if too_wide:
                    why = self.no_room(job.gpus)
                if why is not None:
                    if reasons is not None:
                        reasons[job.id] = why
                    if not (too_wide and self.widest) or len(aside) == BACKFILL_DEPTH:
                        break
                    aside.append(queue.popleft())  # it fits no online worker: the team's narrower jobs go on
                    continue
                node = self.place(job) if job.gpus <= room else None
                if node is not None:
                    self.start(job, node)
                    started.append((job, node))
                    if queue:
                        heapq.heappush(heap, (self.key(team), team))
                    break
                if reasons is not None:
                    reasons[job.id] = self.waiting_reason(job)
                # A wide job waits for room (kept for it if reserved), and a job too long to backfill a reserved
                # worker waits for it to start: the team's next jobs may still fit (narrower, or shorter), up to
                # BACKFILL_DEPTH of them; a 1-device job with no free slot at all means nothing of this team fits.
                if len(aside) == BACKFILL_DEPTH or (job.gpus == 1 and room < 1):
                    break
                aside.append(queue.popleft())
        for team, jobs in held.items():
            self.queues[team].extendleft(reversed(jobs))
        return started

    def no_room(self, gpus: int) -> str:
        """Why a job of `gpus` devices fits on no online worker of the pool."""
        pool, hosts = self.snap.pool, [n.id for n in self.snap.draining if n.slots >= gpus]
        if hosts:
            return (f"the workers of pool '{pool}' {'with ' + _gpus(gpus) + ' ' if self.widest else ''}are on "
                    f"draining hosts ({', '.join(hosts)}): it starts once one is undrained or another worker joins")
        return (f"no worker in pool '{pool}' has {_gpus(gpus)}" if self.widest
                else f"no worker is online in pool '{pool}'")

    def waiting_reason(self, job: Waiting) -> str:
        held = next(((n, t) for n, (t, j) in self.reservations.items() if j == job.id), None)
        if held is not None:
            return (f"needs {_gpus(job.gpus)} on one worker: worker {held[0]} is reserved for it, "
                    f"expected free in {max(held[1] - self.now, 0) / 60:.0f} min")
        if job.gpus > 1 and any(free > 0 for free in self.free.values()):
            return (f"needs {_gpus(job.gpus)} on one worker; none has them free yet (the one waiting longest "
                    f"reserves a worker after {self.snap.reserve_after_seconds / 60:.0f} min)")
        share = self.share.get(job.team, 0.0)
        running = self.running_gpus.get(job.team, 0)
        slots = (f"the 1 slot of pool '{self.snap.pool}' is busy" if self.capacity == 1
                 else f"all {self.capacity} slots of pool '{self.snap.pool}' are busy")
        return f"{slots}; team {job.team} runs {running} of its fair share of {share:.1f}"


def plan(snap: Snapshot) -> Plan:
    """What to do now in one pool: starts, preemptions, reservations, and why each team's first job waits."""
    alloc = _Allocator(snap)
    out = Plan(reasons={job.id: why for job, why in alloc.never.items()})
    for job, node in alloc.pick(out.reasons, out.reserved):
        out.starts.append((job.id, node))
        out.reasons.pop(job.id, None)
        out.reserved.pop(job.id, None)
    out.preempt = _victims(snap, alloc)
    return out


def _victims(snap: Snapshot, alloc: _Allocator) -> list[int]:
    """Running jobs to checkpoint and re-queue so that a team below its share (or a job of higher priority
    in the same team) gets its slots: the ones that lose the least work, never before the minimum run time."""
    if snap.min_run_seconds < 0 or any(r.preempt_requested for r in snap.running):
        return []  # a preemption already under way frees slots first: decide again once it has
    running_gpus = dict(alloc.running_gpus)
    by_node: dict[str | None, list[Running]] = {}
    for r in snap.running:
        by_node.setdefault(r.node, []).append(r)
    chosen: list[int] = []
    # Each team's first jobs, as many as the pool has slots, best-placed team first.
    heads = sorted((j for q in alloc.queues.values() for j in list(q)[:alloc.capacity]),
                   key=lambda j: (alloc.key(j.team), _job_order(j)))
    for job in heads:
        team = alloc._team(job.team)
        if job.gpus > alloc.widest or (team.gpu_hours_per_week is not None
                                       and team.week_gpu_hours >= team.gpu_hours_per_week):
            continue
        # at its device quota a team may still swap a job of its own, of lower priority, for this one
        over_quota = (0 if team.max_gpus is None else
                      max(0, running_gpus.get(job.team, 0) + job.gpus - team.max_gpus))
        below = running_gpus.get(job.team, 0) + job.gpus <= alloc.share.get(job.team, 0.0) + 1e-9
        best: tuple[float, list[Running]] | None = None
        for node, jobs in by_node.items():
            if node is None:
                continue
            free, own = alloc.free.get(node, 0), 0
            pick, lost = [], 0.0
            losers = [r for r in jobs if r.id not in chosen and (not over_quota or r.team == job.team)
                      and _may_lose(r, job, below, snap, alloc, running_gpus)]
            for r in sorted(losers, key=lambda r: (r.at_risk_seconds * r.gpus, -r.started_at)):
                if free >= job.gpus and own >= over_quota:
                    break
                pick.append(r)
                free += r.gpus
                own += r.gpus if r.team == job.team else 0
                lost += r.at_risk_seconds * r.gpus
            if free >= job.gpus and own >= over_quota and pick and (best is None or lost < best[0]):
                best = (lost, pick)
        if best is not None:
            for r in best[1]:
                chosen.append(r.id)
                running_gpus[r.team] -= r.gpus
            running_gpus[job.team] = running_gpus.get(job.team, 0) + job.gpus
    return chosen


def _may_lose(r: Running, job: Waiting, below: bool, snap: Snapshot, alloc: _Allocator,
              running_gpus: dict[str, int]) -> bool:
    """Whether running job `r` may be preempted for waiting `job` (whose team is `below` its share)."""
    if not r.preemptible or snap.now - r.started_at < snap.min_run_seconds:
        return False
    if r.team == job.team:
        return r.priority < job.priority
    over = running_gpus.get(r.team, 0) - r.gpus >= alloc.share.get(r.team, 0.0) - 1e-9
    return below and over


def forecast(snap: Snapshot, limit: int | None = None) -> dict[int, Forecast]:
    """Each queued job's position, expected start and reason, by playing `plan`'s picking forward on expected
    run times (the first `limit` jobs to start, or all)."""
    alloc = _Allocator(snap)
    heads = {q[0].id for q in alloc.queues.values() if q}
    # what its team's quota says of each job now (plan gives a reason for a team's first job only)
    quota = {job.id: why for q in alloc.queues.values() for job in q if (why := alloc.blocked_by_quota(job))}
    reasons: dict[int, str] = {}
    out: dict[int, Forecast] = {}
    free_now: set[int] = set()  # the jobs that start now, on slots free now
    position, first = 0, True
    while True:
        started = alloc.pick(reasons if first else None)
        for job, _ in started:
            # Not picked first yet now: it takes the slot of a job past its expected end, which ends when nobody
            # can say (its end is taken as now only to play the queue on).
            out[job.id] = Forecast(position, alloc.now if first or alloc.now > snap.now else None, "")
            if first:
                free_now.add(job.id)
            position += 1
        first = False
        if limit is not None and position >= limit:
            break
        if not any(alloc.queues.values()) or not alloc.ends:
            break
        alloc.now = alloc.ends[0][0]
        alloc.release_until(alloc.now)
    # held by a weekly quota or a pool without workers, then those wider than their team's max_gpus
    for job in [*sorted((j for q in alloc.queues.values() for j in q), key=_job_order), *alloc.never]:
        out[job.id] = Forecast(position, None, "")
        position += 1
    reasons.update((job.id, why) for job, why in alloc.never.items())
    for job_id, fc in out.items():
        # What holds each job now: its team's first job's reason, or the jobs ahead of it.
        if job_id in reasons:
            fc.reason = reasons[job_id]
        elif job_id in free_now:
            fc.reason = "a slot is free: it starts at this scheduling round"
        elif job_id in quota:
            fc.reason = quota[job_id]
        elif job_id in heads:
            fc.reason = f"{_jobs(fc.position)} start before it in pool '{snap.pool}', as slots free up"
        else:
            fc.reason = f"behind {_jobs(fc.position)} in pool '{snap.pool}' (fair share, then priority, then age)"
    return out
