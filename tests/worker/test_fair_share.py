"""Teams sharing workers through the real platform (web, scheduler and worker processes, real Redis): fair
share against a burst, device quotas under concurrent submissions and two schedulers, preemption that keeps the
work, and the ETA of a queued job."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import requests
from sqlalchemy import select, update

from genq.api_tokens import create_token
from genq.db import Job, Metric, Team, Worker
from tests.worker.platform import tiny_gpt


def token(platform, team: str, role: str = "member") -> str:
    with platform.db.session() as s:
        return create_token(s, team=team, role=role)


def submit_as(platform, secret: str, params: dict, **fields) -> int:
    body = {"type": "train", "model": "gpt", "dataset": "pydoc", "params": params, **fields}
    answer = requests.post(f"{platform.url}/api/v1/jobs", json=body, headers={"Authorization": f"Bearer {secret}"},
                           timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def rows(platform, ids: list[int]) -> list[Job]:
    with platform.db.session() as s:
        return list(s.scalars(select(Job).where(Job.id.in_(ids))))


def workers_online(platform, n: int) -> None:
    def online():
        with platform.db.session() as s:
            return len(s.scalars(select(Worker.id).where(Worker.status == "online")).all()) == n
    platform.wait_for(online, 60, f"{n} workers online")


def cancel_all(platform, ids: list[int]) -> None:
    for job_id in ids:
        platform.api("POST", f"/jobs/{job_id}/cancel")


def test_a_second_team_is_not_held_off_by_the_first_teams_burst(platform):
    a, b = token(platform, "team-a"), token(platform, "team-b")
    platform.start_worker("cpu0")
    platform.start_worker("cpu1")
    workers_online(platform, 2)
    platform.start_scheduler()
    params = tiny_gpt(max_steps=60, eval_interval=60, checkpoint_interval=60)
    burst_a = [submit_as(platform, a, params) for _ in range(12)]
    platform.wait_for(lambda: sum(j.status == "running" for j in rows(platform, burst_a)) == 2, 60,
                      "both slots busy with team a")
    b_submitted = datetime.now(UTC).replace(tzinfo=None)
    burst_b = [submit_as(platform, b, params) for _ in range(12)]
    everything = burst_a + burst_b

    def next_starts():
        later = sorted((j for j in rows(platform, everything) if j.started_at and j.started_at > b_submitted),
                       key=lambda j: j.started_at)
        return len(later) >= 8 and later[:8]
    starts = platform.wait_for(next_starts, 180, "eight more jobs to start")
    cancel_all(platform, everything)
    teams = [("b" if j.id in burst_b else "a") for j in starts]
    # FIFO within priority would start team a's ten remaining jobs first: b would get none of these eight.
    assert teams.count("b") >= 3, teams


def test_a_device_quota_holds_under_concurrent_submissions_and_two_schedulers(platform):
    quota = token(platform, "capped")
    with platform.db.session() as s:
        s.execute(update(Team).where(Team.name == "capped").values(max_gpus=1))
    platform.start_worker("cpu0")
    platform.start_worker("cpu1")
    workers_online(platform, 2)
    platform.start_scheduler(interval=0.1)
    platform.start_scheduler(interval=0.1)
    params = tiny_gpt(max_steps=8, eval_interval=8, checkpoint_interval=8)
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda _: submit_as(platform, quota, params), range(20)))
    platform.wait_for(lambda: all(j.status == "succeeded" for j in rows(platform, ids)), 240, "all 20 to succeed")
    runs = sorted((j.started_at, j.finished_at) for j in rows(platform, ids))
    overlaps = [(a, b) for a, b in zip(runs, runs[1:]) if b[0] < a[1]]
    assert not overlaps, f"jobs of a team with a quota of 1 device ran at once: {overlaps}"
    # Two schedulers counted the usage, each tick: every second the jobs ran is counted once.
    ran = sum((end - start).total_seconds() for start, end in runs)
    platform.wait_for(lambda: all(j.accrued_until is None for j in rows(platform, ids)), 30, "usage counted")
    used = platform.api("GET", "/usage?team=capped").json()["teams"][0]["gpu_seconds"]
    # Counted twice would be 2x. These jobs run ~0.4 s each, so the accrual's granularity shows: up to 11% over
    # was seen under load (the cause not yet found: see the session note).
    assert 0.8 * ran <= used <= 1.2 * ran, (used, ran)


def final_loss(platform, job_id: int) -> float:
    with platform.db.session() as s:
        return s.scalars(select(Metric.value).where(Metric.job_id == job_id, Metric.name == "val/loss")
                         .order_by(Metric.step.desc(), Metric.id.desc())).first()


def test_a_preempted_job_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(platform):
    a, b = token(platform, "owner-a"), token(platform, "owner-b")
    platform.start_worker("cpu0")
    platform.start_worker("cpu1")
    workers_online(platform, 2)
    platform.spawn("scheduler", "--interval", "0.2", GENQ_PREEMPT_MIN_RUN_SECONDS="1")
    # long enough that the preemption lands before the victim ends (a step of this model takes a few ms)
    params = tiny_gpt(max_steps=1200, eval_interval=300, checkpoint_interval=50, seed=7)
    reference = submit_as(platform, a, params)
    platform.wait_status(reference, ("succeeded",), 240)

    victim = submit_as(platform, a, params)
    protected = submit_as(platform, a, tiny_gpt(max_steps=100_000, checkpoint_interval=1000),
                          preemptible=False)
    platform.wait_for(lambda: all(j.status == "running" for j in rows(platform, [victim, protected])), 60,
                      "team a on both workers")
    platform.wait_for(lambda: rows(platform, [victim])[0].step >= 60, 120, "the victim past its first checkpoint")
    short = submit_as(platform, b, tiny_gpt(max_steps=20, eval_interval=20, checkpoint_interval=20))
    seen: list[int] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = platform.job(victim)
        seen.append(job["step"])
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    cancel_all(platform, [protected])
    job = platform.job(victim)
    assert job["status"] == "succeeded", job
    assert job["preemptions"] >= 1 and platform.job(protected)["preemptions"] == 0
    assert platform.job(short)["status"] == "succeeded"
    assert platform.job(short)["started_at"] < job["finished_at"], "team b ran while team a's job waited"
    drops = [before - after for before, after in zip(seen, seen[1:]) if after < before]
    assert max(drops, default=0) <= params["checkpoint_interval"], f"the step went back by {drops}"
    ours, theirs = final_loss(platform, victim), final_loss(platform, reference)
    print(f"preempted {job['preemptions']}x: final val/loss {ours:.5f}; uninterrupted: {theirs:.5f}; "
          f"largest step drop {max(drops, default=0)}")
    assert abs(ours - theirs) <= 0.02 * theirs, f"final val/loss {ours:.4f} after preemption vs {theirs:.4f}"


def test_the_eta_of_a_job_behind_a_running_one_is_near_its_real_start(platform):
    platform.start_worker("cpu0")
    workers_online(platform, 1)
    platform.start_scheduler()
    # Long enough that the job's fixed start and finish (a second or two, not timed by the step rate) stay
    # well within the 50% allowed: 600 steps ran in under 4 s on a busy machine, and 2 s were fixed costs.
    steady = tiny_gpt(max_steps=3000, eval_interval=3000, checkpoint_interval=3000)
    first = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": steady})
    second = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": steady})
    platform.wait_for(lambda: platform.job(first)["step"] >= 750, 180, "the first job a quarter done")
    job, running = platform.job(second), platform.job(first)
    asked = datetime.now(UTC).replace(tzinfo=None)
    assert job["status"] == "queued" and job["queue_position"] == 0 and job["wait_reason"], job
    eta = datetime.fromisoformat(job["eta"].removesuffix("Z"))
    finish = datetime.fromisoformat(running["eta"].removesuffix("Z"))
    assert abs((finish - eta).total_seconds()) < 2, "it starts when the running one is expected to finish"
    started = datetime.fromisoformat(platform.wait_status(second, ("running", "succeeded"), 240)["started_at"]
                                     .removesuffix("Z"))
    truth, error = (started - asked).total_seconds(), abs((eta - started).total_seconds())
    assert error <= 0.5 * truth, f"ETA {eta} vs real start {started}: off by {error:.1f} s of {truth:.1f} s"
    cancel_all(platform, [first, second])
