"""Server-sent event streams: the live job events of genq.events, relayed from Redis to a page or a script.

A stream holds one server thread for its whole life (gunicorn's gthread workers have a fixed number), so
a process keeps at most `limit` open and refuses more with 503 and Retry-After, and each ends after
`lifetime` seconds (EventSource reconnects by itself) or once its job has finished. The rows stay the
truth: a stream subscribes first and then reads its first state from the database, so nothing published
in between is missed; it reads the row again for every status event and at every keep-alive, so an event
lost on the way costs at most one keep-alive interval. A stream opened with a token checks once a keep-alive interval
(at most TOKEN_CHECK_EVERY seconds apart) that the token is still live, one primary-key read, and ends once it
has been revoked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import redis
from flask import Response
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from genq.db import Database
from genq.db.models import ApiToken, Job, JobLog
from genq.errors import Unavailable
from genq.jobs.views import job_to_dict, latest_jobs
from genq.web import queries

log = logging.getLogger("genq.web")

RETRY = "retry: 2000\n\n"  # EventSource reconnects 2 s after a stream ends (its lifetime, a restart)
KEEPALIVE = ": keep-alive\nevent: ping\ndata: {}\n\n"  # a comment for proxies, an event for the page's watchdog
TICK = 1.0  # the longest wait for a message, so deadlines and keep-alives are kept
LIST_EVERY = 1.0  # at most one job-list event a second, however many jobs change status at once
# Seconds between a stream's checks of its token (its keep-alive interval if shorter): what a revoked token's open
# stream may still send. One primary-key read a second per stream, of at most GENQ_MAX_EVENT_STREAMS a process.
TOKEN_CHECK_EVERY = 1.0
# A change of these is worth a status event at a recheck (progress has events of its own).
WATCHED = ("status", "attempts", "error", "cancel_requested")


def sse(event: str, data: object) -> str:
    """One server-sent event with JSON data."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def token_live(db: Database, token_id: int) -> Callable[[], bool]:
    """A check that token `token_id` is still live (not revoked, not deleted): one primary-key read."""

    def live() -> bool:
        with db.session() as s:
            return s.scalar(select(ApiToken.id).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))) \
                is not None

    return live


class Subscription:
    """One open stream's Redis subscription and server slot; close() gives both back, once."""

    def __init__(self, pubsub, release: Callable[[], None], lifetime: float, closing: threading.Event,
                 allowed: Callable[[], bool] | None = None, check_every: float = TOKEN_CHECK_EVERY):
        self._pubsub, self._release, self._closing = pubsub, release, closing
        self.deadline = time.monotonic() + lifetime
        self._closed = False
        self._allowed, self._check_every = allowed, check_every
        self._next_check = time.monotonic() + check_every

    def _still_allowed(self) -> bool:
        """Whether the caller may go on receiving (asked of `allowed` at most every `check_every` seconds)."""
        if self._allowed is None or time.monotonic() < self._next_check:
            return True
        self._next_check = time.monotonic() + self._check_every
        return self._allowed()

    def messages(self) -> Iterator[dict | None]:
        """The decoded messages, and None after each quiet TICK; ends at the deadline, when the server stops, or
        once the caller's token no longer is valid (checked every `check_every` seconds, not per message)."""
        while (left := self.deadline - time.monotonic()) > 0 and not self._closing.is_set():
            if not self._still_allowed():
                log.info("an event stream ended: its token was revoked")
                return
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=min(TICK, left))
            if message is None:
                yield None
                continue
            try:
                decoded = json.loads(message["data"])
            except (TypeError, ValueError):
                decoded = None
            # An event name goes into the stream as is: a plain word only, never a line break.
            if isinstance(decoded, dict) and str(decoded.get("event")).isidentifier() \
                    and isinstance(decoded.get("data"), dict):
                yield decoded
            else:
                log.debug("ignored a malformed event on %s", message.get("channel"))

    def close(self) -> None:
        """Unsubscribe and free the slot (the generator's end and the response's close both call it)."""
        if not self._closed:
            self._closed = True
            self._pubsub.close()
            self._release()


class Relay:
    """This process' event streams: the Redis they subscribe through, and the slots that bound them."""

    def __init__(self, redis_url: str | None, limit: int, lifetime: float, keepalive: float):
        self.limit, self.lifetime, self.keepalive = limit, lifetime, keepalive
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=10) if redis_url else None
        self._slots = threading.BoundedSemaphore(max(0, limit))  # 0: live events off, pages poll
        self._lock = threading.Lock()
        self.open_streams = 0
        self.refused = 0
        self._closing = threading.Event()

    def subscribe(self, channels: list[str], allowed: Callable[[], bool] | None = None) -> Subscription:
        """A confirmed subscription to `channels` holding one slot, else Unavailable (no slot free, no Redis);
        it ends once `allowed()` (asked once a keep-alive interval, at most TOKEN_CHECK_EVERY s apart) says no."""
        if self.redis is None:
            raise Unavailable("live events are off: this server has no GENQ_REDIS_URL; poll the JSON API instead",
                              retry_after=300)
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            raise Unavailable(f"this server holds its limit of {self.limit} event streams; poll the JSON API "
                              "or retry later")
        with self._lock:
            self.open_streams += 1
        pubsub = self.redis.pubsub()
        try:
            pubsub.subscribe(*channels)
            # Wait for Redis to confirm: from then on nothing published can slip past the first state read.
            deadline, confirmed = time.monotonic() + 5, 0
            while confirmed < len(channels):
                if time.monotonic() > deadline:
                    raise TimeoutError("no subscription confirmation")
                message = pubsub.get_message(timeout=0.5)
                confirmed += bool(message and message["type"] == "subscribe")
        except (redis.RedisError, OSError) as exc:
            pubsub.close()
            self._release()
            raise Unavailable(f"live events are unavailable: Redis does not answer ({type(exc).__name__}); "
                              "poll the JSON API instead") from None
        return Subscription(pubsub, self._release, self.lifetime, self._closing, allowed,
                            max(0.5, min(self.keepalive, TOKEN_CHECK_EVERY)))

    def close(self) -> None:
        """End every stream within a TICK: the server is stopping and should not wait for them."""
        self._closing.set()

    def _release(self) -> None:
        with self._lock:
            self.open_streams -= 1
        self._slots.release()


def response(body: Iterator[str], subscription: Subscription) -> Response:
    """The text/event-stream answer; the subscription closes with it, even if the body never ran."""
    answer = Response(body, mimetype="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    answer.call_on_close(subscription.close)
    return answer


def _read_job(db: Database, job_id: int, after_log: int) -> tuple[dict, list[dict]]:
    """The job as the API shows it, and its log lines newer than `after_log`."""
    with db.session() as s:
        return job_to_dict(s, s.get(Job, job_id), brief=True), queries.job_logs(s, job_id, after_log)


def job_events(db: Database, job_id: int, sub: Subscription, keepalive: float) -> Iterator[str]:
    """One job's stream: a status event with its state now, then its events until it has finished."""
    try:
        with db.session() as s:
            after_log = s.scalar(select(func.max(JobLog.id)).where(JobLog.job_id == job_id)) or 0
        job, _ = _read_job(db, job_id, after_log)
        yield RETRY + sse("status", job)
        if job["finished"]:
            return
        next_ping = time.monotonic() + keepalive
        for message in sub.messages():
            if message is None:
                if time.monotonic() < next_ping:
                    continue
                next_ping = time.monotonic() + keepalive
                yield KEEPALIVE
            elif message["event"] not in ("status", "log"):
                yield sse(message["event"], message["data"])  # progress, metrics, outputs: as published
                continue
            # A status or log event, or a keep-alive's recheck: the row and the log table say what changed.
            fresh, lines = _read_job(db, job_id, after_log)
            if lines:
                after_log = lines[-1]["id"]
                yield sse("log", {"lines": lines})
            if (message is not None and message["event"] == "status") or any(fresh[k] != job[k] for k in WATCHED):
                yield sse("status", fresh)
            job = fresh
            if job["finished"]:
                return
    except (SQLAlchemyError, redis.RedisError) as exc:  # the client reconnects, or falls back to polling
        log.info("event stream of job %s ended: %s", job_id, type(exc).__name__)
    finally:
        sub.close()


def team_events(db: Database, team_id: int | None, filters: dict, sub: Subscription, keepalive: float) -> Iterator[str]:
    """A team's job-list stream: a jobs event with the list (as GET /api/v1/jobs with `filters` answers), again
    whenever a job changes status (at most once a second), and progress events in between."""

    def current() -> list[dict]:
        with db.session() as s:
            return [job_to_dict(s, j, brief=True) for j in latest_jobs(s, team_id, **filters)[0]]

    try:
        jobs = current()
        yield RETRY + sse("jobs", {"jobs": jobs})
        dirty, sent_at, next_ping = False, time.monotonic(), time.monotonic() + keepalive
        for message in sub.messages():
            now = time.monotonic()
            if message is None:
                if now >= next_ping:
                    next_ping = now + keepalive
                    dirty = True  # recheck the rows: an event may have been lost
                    yield KEEPALIVE
            elif message["event"] == "status":
                dirty = True
            elif message["event"] == "progress":
                yield sse("progress", {"id": message.get("job"), **message["data"]})
            if dirty and now - sent_at >= LIST_EVERY:
                fresh, dirty, sent_at = current(), False, now
                if fresh != jobs:
                    jobs = fresh
                    yield sse("jobs", {"jobs": jobs})
    except (SQLAlchemyError, redis.RedisError) as exc:
        log.info("job-list event stream of team %s ended: %s", team_id, type(exc).__name__)
    finally:
        sub.close()
