"""Scheduler wakes against a real Redis and a real database: a wake dispatches without waiting for the tick,
a burst of wakes coalesces, and with wakes lost the tick still dispatches."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from genq.db import Worker
from genq.events import WAKE_KEY, Publisher, WakeSignal
from genq.redis_server import free_port
from genq.worker.scheduler import Scheduler
from tests.worker.test_scheduler import add_jobs, add_worker, queued_messages, worker_id


@pytest.fixture
def fresh_redis(redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def test_a_burst_of_wakes_is_one_wake(fresh_redis):
    publisher, signal = Publisher(fresh_redis), WakeSignal(fresh_redis, longest=1.0)
    for _ in range(200):
        publisher.wake_scheduler()
    assert redis.Redis.from_url(fresh_redis).llen(WAKE_KEY) == 1
    assert signal.wait(1.0) is True
    assert signal.wait(0.05) is False, "the 199 other wakes were coalesced into the first"
    signal.close()


def test_without_redis_a_wait_sleeps_out_its_timeout(fresh_redis):
    signal = WakeSignal(f"redis://127.0.0.1:{free_port()}/0", longest=1.0)
    start = time.monotonic()
    assert signal.wait(0.3) is False
    assert time.monotonic() - start >= 0.3, "a failing Redis must not turn the scheduler's loop into a busy one"


def run_in_thread(scheduler: Scheduler, interval: float, wakes: WakeSignal | None = None):
    """Start scheduler.run(interval) in a thread; returns a function that stops it and waits."""
    stopping = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(interval, stopping.is_set, wakes), daemon=True)
    thread.start()

    def stop():
        stopping.set()
        Publisher(scheduler.broker_url).wake_scheduler()  # the loop sees the flag after its wait
        thread.join(interval + 10)
        assert not thread.is_alive()
    return stop


def wait_for_messages(redis_url: str, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queued_messages(redis_url) >= n:
            return True
        time.sleep(0.05)
    return False


def test_a_wake_dispatches_without_waiting_for_the_tick(db, settings, fresh_redis):
    scheduler = Scheduler(settings, fresh_redis)
    add_worker(db, age=3600)  # silent for an hour: the first tick marks it offline, which shows it ran
    stop = run_in_thread(scheduler, interval=3600)  # one tick at the start, none after it in this test
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (db_worker_status(db) != "offline"):
            time.sleep(0.05)
        assert db_worker_status(db) == "offline"
        add_worker(db, slots=2)
        add_jobs(db, 2)
        Publisher(fresh_redis).wake_scheduler()
        assert wait_for_messages(fresh_redis, 2, 30), "only a wake could have sent them: the next tick is in an hour"
    finally:
        stop()
        scheduler.db.dispose()


def db_worker_status(db) -> str:
    with db.session() as s:
        return s.get(Worker, worker_id(age=3600)).status


def test_with_wakes_lost_the_tick_still_dispatches(db, settings, fresh_redis):
    scheduler = Scheduler(settings, fresh_redis)
    add_worker(db)
    lost = WakeSignal(f"redis://127.0.0.1:{free_port()}/0", longest=0.5)  # nobody ever wakes this scheduler
    stop = run_in_thread(scheduler, interval=0.5, wakes=lost)
    try:
        add_jobs(db, 1)
        assert wait_for_messages(fresh_redis, 1, 30)
    finally:
        stop()
        scheduler.db.dispose()
