"""Live job events on Redis pub/sub, for pages that update without polling.

Whoever commits a change to a job publishes a small event after the commit: the worker (running, progress,
metric points, log lines, outputs, the end, a re-queue at shutdown), the scheduler (a lost worker's job
re-queued or failed) and the web (submitted, cancelled). The web relays them as server-sent events
(genq.web.streams). The database stays the record: an event lost while Redis is away makes a page late,
never wrong, because the relay reads the row for every status and rechecks it at each keep-alive.

Channels: `genq:job:<id>` carries every event of one job; `genq:jobs:<team id>` carries the status and
progress events of a team's jobs (the job list). A message is JSON: {"event", "job", "data"}.

Scheduler wakes ride the same connection: whoever frees a slot or queues a job (a worker starting or ending a
job, the web after a submit or a cancel) pushes onto the list `genq:scheduler:wake`, which holds at most one
item; the scheduler blocks on it between its ticks (WakeSignal) and dispatches at once. A burst of wakes while
it dispatches leaves one item, so it costs one more dispatch round, not one each. A lost wake costs the wait
for the next tick.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from genq.metrics import finite

log = logging.getLogger("genq.events")

TEAM_EVENTS = ("status", "progress")  # what the job list needs; the rest goes to the job's own channel only
WAKE_KEY = "genq:scheduler:wake"


def job_channel(job_id: int) -> str:
    """The channel of one job's events."""
    return f"genq:job:{job_id}"


def team_channel(team_id: int) -> str:
    """The channel of the status and progress events of a team's jobs."""
    return f"genq:jobs:{team_id}"


def flush_events(metrics: list[dict], logs: list[dict], values: dict) -> list[tuple[str, dict]]:
    """The events for one flush of a job's hooks: metric rows as compact series, a count of new log lines,
    and the job's step and progress."""
    events: list[tuple[str, dict]] = []
    if values:
        events.append(("progress", dict(values)))
    if metrics:
        series: dict[str, list[list]] = {}
        for row in metrics:
            series.setdefault(row["name"], []).append([row["step"], finite(row["value"])])
        events.append(("metrics", {"series": series}))
    if logs:
        events.append(("log", {"count": len(logs)}))
    return events


class Publisher:
    """Publishes job events. Never raises and never waits long: after a failure it stays quiet for `pause`
    seconds, so a Redis outage costs a running job one short timeout now and then, nothing more."""

    def __init__(self, redis_url: str | None, timeout: float = 0.5, pause: float = 5.0):
        self.pause = pause
        self._paused_until = 0.0
        self._redis = None
        if redis_url:
            self._redis = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                               retry=Retry(NoBackoff(), 0))

    def status(self, job_id: int, team_id: int, status: str, wake: bool = False) -> None:
        """Job `job_id` of team `team_id` is now `status` (committed already); `wake`: wake the scheduler too."""
        self.publish(job_id, team_id, [("status", {"status": status})], wake=wake)

    def publish(self, job_id: int, team_id: int | None, events: Iterable[tuple[str, dict]], wake: bool = False
                ) -> None:
        """Publish `events` [(name, data)] of job `job_id` in one round trip: each on the job's channel, and
        status and progress also on its team's; with `wake`, wake the scheduler in the same round trip."""
        def fill(pipe) -> None:
            for name, data in events:
                message = json.dumps({"event": name, "job": job_id, "data": data}, separators=(",", ":"))
                pipe.publish(job_channel(job_id), message)
                if team_id is not None and name in TEAM_EVENTS:
                    pipe.publish(team_channel(team_id), message)
            if wake:
                _push_wake(pipe)
        self._send(fill, f"events of job {job_id}")

    def wake_scheduler(self) -> None:
        """Wake the scheduler now: a slot is free or a job is queued (committed already)."""
        self._send(_push_wake, "a scheduler wake")

    def _send(self, fill, what: str) -> None:
        """Run the commands `fill(pipeline)` adds in one round trip, unless paused after a failure."""
        if self._redis is None or time.monotonic() < self._paused_until:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            fill(pipe)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a live page is never worth failing or slowing a job
            log.debug("%s not sent (%s); quiet for %.0f s", what, exc, self.pause)
            self._paused_until = time.monotonic() + self.pause

    def close(self) -> None:
        """Drop the connections."""
        if self._redis is not None:
            self._redis.close()


def _push_wake(pipe) -> None:
    # Push, then keep the last item: the list never holds more than one wake, however many come.
    pipe.rpush(WAKE_KEY, 1)
    pipe.ltrim(WAKE_KEY, -1, -1)


class WakeSignal:
    """The scheduler's side of the wakes: wait() blocks until one comes or the timeout passes. When Redis fails
    it sleeps out the timeout instead, so the scheduler falls back to its ticks."""

    def __init__(self, redis_url: str, longest: float):
        # The socket waits a little longer than the longest block, so a Redis that hangs cannot stall a tick.
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=longest + 5.0, socket_connect_timeout=2.0,
                                           retry=Retry(NoBackoff(), 0))
        self._failing = False

    def wait(self, timeout: float) -> bool:
        """Whether a wake came within `timeout` seconds; it is consumed."""
        if timeout <= 0:  # BLPOP with 0 would block for ever
            return False
        deadline = time.monotonic() + timeout
        try:
            woken = self._redis.blpop([WAKE_KEY], timeout=max(timeout, 0.01)) is not None
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("scheduler wakes unavailable (%s); dispatching on the tick only", exc)
            self._failing = True
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False
        if self._failing:
            log.info("scheduler wakes are back")
        self._failing = False
        return woken

    def close(self) -> None:
        """Drop the connection."""
        self._redis.close()
