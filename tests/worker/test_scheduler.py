"""The scheduler against a real database and a real Redis: dispatch to free slots, and reconciliation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
import redis

from genq.db import Job, JobLog, Team, UsageDay, Worker, utcnow
from genq.worker.scheduler import Scheduler


@pytest.fixture
def scheduler(settings, redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    s = Scheduler(settings, redis_url)
    yield s
    s.db.dispose()


def queued_messages(redis_url: str, pool: str = "default") -> int:
    return redis.Redis.from_url(redis_url).llen(f"gpu.{pool}")


def add_jobs(db, n: int, **fields) -> list[int]:
    with db.session() as s:
        team = s.query(Team).filter_by(name="t").one_or_none() or Team(name="t")
        s.add(team)
        s.flush()
        jobs = [Job(team_id=team.id, type="train", model="gpt", builtin_dataset="pydoc", **fields) for _ in range(n)]
        s.add_all(jobs)
        s.flush()
        return [j.id for j in jobs]


def worker_id(slots: int = 1, pool: str = "default", age: float = 0.0) -> str:
    """The id add_worker gives, in the form genq.worker.runner's ids have (HOST:PID:TOKEN)."""
    return f"h:{slots}:{pool}{age}"


def add_worker(db, slots: int = 1, pool: str = "default", age: float = 0.0) -> None:
    with db.session() as s:
        s.add(Worker(id=worker_id(slots, pool, age), hostname="h", pool=pool, slots=slots,
                     last_heartbeat=utcnow() - timedelta(seconds=age)))


def test_dispatches_only_to_free_slots_in_priority_then_age_order(db, scheduler, redis_url):
    low = add_jobs(db, 2)
    high = add_jobs(db, 1, priority=5)
    assert scheduler.dispatch() == 0, "no worker online: nothing is sent"
    add_worker(db, slots=2)
    assert scheduler.dispatch() == 2
    assert queued_messages(redis_url) == 2
    with db.session() as s:
        sent = {j.id for j in s.query(Job).filter(Job.dispatched_at.is_not(None))}
    assert sent == {high[0], low[0]}
    assert scheduler.dispatch() == 0, "both slots are taken by dispatched jobs"


def test_expired_lease_requeues_then_fails_after_max_attempts(db, scheduler):
    past = utcnow() - timedelta(seconds=5)
    (retry,) = add_jobs(db, 1, status="running", worker_id="dead", attempts=1, lease_expires_at=past,
                        checkpoint_step=40)
    (spent,) = add_jobs(db, 1, status="running", worker_id="dead", attempts=3, max_attempts=3, lease_expires_at=past)
    (cancel,) = add_jobs(db, 1, status="running", worker_id="dead", attempts=1, lease_expires_at=past,
                         cancel_requested=True)
    (alive,) = add_jobs(db, 1, status="running", worker_id="w", attempts=1,
                        lease_expires_at=utcnow() + timedelta(seconds=30))
    scheduler.reconcile()
    with db.session() as s:
        assert (s.get(Job, retry).status, s.get(Job, retry).worker_id, s.get(Job, retry).dispatched_at) == \
            ("queued", None, None)
        assert "resume from step 40" in s.query(JobLog).filter_by(job_id=retry).one().message
        assert s.get(Job, spent).status == "failed"
        assert "stopped answering 3 times" in s.get(Job, spent).error
        assert s.get(Job, cancel).status == "cancelled"
        assert s.get(Job, alive).status == "running"


def test_unclaimed_dispatch_is_sent_again(db, scheduler, settings, redis_url):
    add_worker(db)
    stale = utcnow() - timedelta(seconds=settings.dispatch_timeout_seconds + 1)
    (job_id,) = add_jobs(db, 1, dispatched_at=stale)
    scheduler.tick()
    assert queued_messages(redis_url) == 1
    with db.session() as s:
        assert s.get(Job, job_id).dispatched_at > stale


def test_silent_workers_go_offline_and_lose_their_slots(db, scheduler, settings):
    add_worker(db, slots=4, age=10 * settings.lease_seconds)
    add_jobs(db, 1)
    scheduler.reconcile()
    assert scheduler.free_slots() == {}
    assert scheduler.dispatch() == 0


def test_redis_down_leaves_jobs_waiting(db, settings):
    from genq.redis_server import free_port

    add_worker(db)
    (job_id,) = add_jobs(db, 1)
    s = Scheduler(settings, f"redis://127.0.0.1:{free_port()}/0")
    s.celery.conf.broker_connection_timeout = 0.5
    s.celery.conf.task_publish_retry_policy = {"max_retries": 0}
    assert s.dispatch() == 0
    with db.session() as session:
        assert session.get(Job, job_id).dispatched_at is None
    s.db.dispose()


def test_a_failed_send_frees_the_rest_of_the_batch(db, scheduler, redis_url, monkeypatch):
    add_worker(db, slots=3)
    add_jobs(db, 3)
    send, sent = scheduler.celery.send_task, []

    def second_send_fails(name, args, **kwargs):
        if len(sent) == 1:
            raise ConnectionError("Redis went away")
        sent.append(args[0])
        return send(name, args=args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(scheduler.celery, "send_task", second_send_fails)
        assert scheduler.dispatch() == 1
    with db.session() as s:
        assert {j.id for j in s.query(Job).filter(Job.dispatched_at.is_not(None))} == set(sent)
    assert scheduler.dispatch() == 2, "the two unsent jobs go out on the next tick"
    assert queued_messages(redis_url) == 3


def test_the_device_quota_holds_when_twenty_claims_race(db, scheduler):
    ids = add_jobs(db, 20)
    with db.session() as s:
        team = s.query(Team).filter_by(name="t").one()
        team.max_gpus, team_id = 2, team.id
    with ThreadPoolExecutor(20) as pool:
        taken = list(pool.map(lambda job_id: scheduler.take_slot(job_id, team_id, 1), ids))
    assert sum(taken) == 2, "the team's row lock lets exactly its quota through"
    with db.session() as s:
        assert s.query(Job).filter(Job.dispatched_at.is_not(None)).count() == 2


def test_a_spent_weekly_quota_sends_nothing(db, scheduler):
    (job_id,) = add_jobs(db, 1)
    with db.session() as s:
        team = s.query(Team).filter_by(name="t").one()
        team.gpu_hours_per_week, team_id = 1.0, team.id
        s.add(UsageDay(team_id=team.id, job_id=job_id, day=utcnow().date(), gpu_seconds=3600.0))
    assert scheduler.take_slot(job_id, team_id, 1) is False


def test_a_job_of_two_devices_goes_to_the_queue_of_the_one_host_with_two_free_slots(db, scheduler, redis_url):
    with db.session() as s:  # host a: two processes of one slot, one running a job; host b: two, both free
        s.add_all([Worker(id=f"{host}:{i}:x", hostname=host, slots=1, last_heartbeat=utcnow())
                   for host in ("a", "b") for i in range(2)])
    add_jobs(db, 1, status="running", worker_id="a:0:x")
    (wide,) = add_jobs(db, 1, gpus=2)
    assert scheduler.dispatch() == 1
    messages = redis.Redis.from_url(redis_url)
    assert (messages.llen("gpu.default@b"), messages.llen("gpu.default@a"), queued_messages(redis_url)) == (1, 0, 0)
    with db.session() as s:
        assert s.get(Job, wide).dispatched_at is not None
    add_jobs(db, 1, gpus=2)
    assert scheduler.dispatch() == 0, "one slot free on a, none on b: no host holds a second job of two"
    add_jobs(db, 1)
    assert scheduler.dispatch() == 1 and messages.llen("gpu.default@a") == 1, "a one-device job takes a's last slot"


def test_while_a_job_of_two_devices_holds_a_host_one_of_one_device_goes_to_the_host_with_a_free_slot(
        db, scheduler, redis_url):
    """Not to the pool's queue, where the gang's host's idle process could take it, only to hand it back."""
    with db.session() as s:  # host a: two processes of one slot, both held by a job of two; host b: one, free
        s.add_all([Worker(id=f"{host}:{i}:x", hostname=host, slots=1, last_heartbeat=utcnow())
                   for host, n in (("a", 2), ("b", 1)) for i in range(n)])
    (gang,) = add_jobs(db, 1, gpus=2, status="running", worker_id="a:0:x")
    add_jobs(db, 1)
    assert scheduler.dispatch() == 1
    messages = redis.Redis.from_url(redis_url)
    assert (messages.llen("gpu.default@b"), messages.llen("gpu.default@a"), queued_messages(redis_url)) == (1, 0, 0)
    with db.session() as s:
        s.get(Job, gang).status = "succeeded"
    add_jobs(db, 1)
    assert scheduler.dispatch() == 1 and queued_messages(redis_url) == 1, "no gang: the pool's queue again"


def test_a_full_pool_is_decided_only_when_a_running_job_may_be_preempted(db, scheduler, monkeypatch):
    add_worker(db, slots=1)
    add_jobs(db, 1)  # waits for the one slot
    (running,) = add_jobs(db, 1, status="running", worker_id=worker_id(), run_started_at=utcnow())
    decided, decide = [], scheduler.decide
    monkeypatch.setattr(scheduler, "decide", lambda pool, free: decided.append(pool) or decide(pool, free))
    assert scheduler.may_preempt("default") is False  # started just now: under preempt_min_run_seconds
    assert scheduler.dispatch() == 0 and decided == []
    long_ago = utcnow() - timedelta(seconds=scheduler.settings.preempt_min_run_seconds + 1)
    with db.session() as s:
        s.get(Job, running).run_started_at = long_ago
    assert scheduler.may_preempt("default") is True
    assert scheduler.dispatch() == 0 and decided == ["default"]  # the policy decides: it may preempt
    with db.session() as s:
        s.get(Job, running).preemptible = False
    assert scheduler.may_preempt("default") is False
    with db.session() as s:
        s.get(Job, running).preemptible = True
    monkeypatch.setattr(scheduler, "settings", replace(scheduler.settings, preempt_min_run_seconds=-1.0))  # off
    assert scheduler.may_preempt("default") is False


def test_a_job_running_on_a_draining_host_holds_no_slot_of_the_online_ones(db, scheduler):
    with db.session() as s:
        s.add_all([Worker(id="v:1:a", hostname="v", slots=1, last_heartbeat=utcnow()),
                   Worker(id="v2:1:b", hostname="v2", slots=1, status="draining", last_heartbeat=utcnow())])
    add_jobs(db, 1, status="running", worker_id="v2:1:b")
    (waiting,) = add_jobs(db, 1)
    assert scheduler.free_slots() == {"default": 1}
    assert scheduler.dispatch() == 1
    with db.session() as s:
        assert s.get(Job, waiting).dispatched_at is not None
