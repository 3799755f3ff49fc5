"""GET /api/v1/events (one job) and /api/v1/events/jobs (a team's list): server-sent events relayed from a real
Redis, on SQLite and PostgreSQL. The events are published with genq.events.Publisher, as the worker does."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest
import redis

from genq.db.models import Job, JobLog
from genq.events import Publisher, flush_events, team_channel
from genq.web import create_app
from tests.web.conftest import add_job, bearer, make_token, submit, team_id


@pytest.fixture
def live(settings, redis_url):
    """An app with live events on the test Redis: two streams at most, short keep-alives and lifetimes."""
    redis.Redis.from_url(redis_url).flushdb()
    live_settings = dataclasses.replace(settings, redis_url=redis_url, max_event_streams=2,
                                        event_keepalive_seconds=0.5, event_stream_seconds=8)
    app = create_app({"SETTINGS": live_settings, "TESTING": True})
    yield app
    app.extensions["genq"].db.dispose()


@pytest.fixture
def publish(redis_url):
    publisher = Publisher(redis_url)
    yield publisher
    publisher.close()


def events(response):
    """(name, data) of each event of a streamed answer as it arrives; comments and retry lines skipped."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":")
                          and ": " in line)
            if "event" in fields:
                yield fields["event"], json.loads(fields["data"])


def stream(client, url, headers):
    response = client.get(url, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream" and response.headers["Cache-Control"] == "no-cache"
    return response


def open_streams(app) -> int:
    return app.extensions["genq"].relay.open_streams


def test_another_teams_job_is_not_found_and_opens_no_stream(live, db, auth, other_auth):
    client = live.test_client()
    job = add_job(db, status="running")
    for headers, status in ((other_auth, 404), ({}, 401)):
        answer = client.get(f"/api/v1/events?job={job}", headers=headers)
        assert answer.status_code == status and answer.mimetype == "application/json", answer.text
    assert client.get("/api/v1/events?job=999999", headers=auth).status_code == 404
    past = client.get("/api/v1/events?job=99999999999", headers=auth)  # past any id: not another id's 404
    assert past.status_code == 422 and "'job' must be between" in past.json["message"], past.json
    assert client.get("/api/v1/events", headers=auth).json["error"] == "invalid_input"
    assert open_streams(live) == 0


def test_a_stream_starts_with_the_state_relays_events_and_ends_with_the_job(live, db, auth, publish):
    job = add_job(db, status="running", progress=0.4, step=40, attempts=1)
    tid = team_id(db)
    response = stream(live.test_client(), f"/api/v1/events?job={job}", auth)
    received = events(response)
    name, first = next(received)
    assert name == "status" and (first["id"], first["status"], first["progress"], first["step"]) == \
        (job, "running", 0.4, 40)
    assert open_streams(live) == 1

    # What the worker publishes after a flush and at the end (the rows are written first, as it does).
    with db.session() as s:
        s.add(JobLog(job_id=job, message="step 50: loss 1.23"))
    rows = [{"name": "train/loss", "step": 49, "value": 1.3}, {"name": "train/loss", "step": 50, "value": float("nan")}]
    publish.publish(job, tid, flush_events(rows, [{"message": "step 50: loss 1.23"}], {"step": 50, "progress": 0.5}))
    assert next(received) == ("progress", {"step": 50, "progress": 0.5})
    assert next(received) == ("metrics", {"series": {"train/loss": [[49, 1.3], [50, None]]}})
    name, logs = next(received)
    assert name == "log" and [line["message"] for line in logs["lines"]] == ["step 50: loss 1.23"]
    assert logs["lines"][0]["id"] > 0

    with db.session() as s:
        s.get(Job, job).status, s.get(Job, job).progress = "succeeded", 1.0
        s.add(JobLog(job_id=job, message="succeeded"))
    publish.publish(job, tid, [("outputs", {"count": 3}), ("status", {"status": "succeeded"})])
    started = time.monotonic()
    rest = list(received)  # the stream ends by itself once the job has finished
    assert time.monotonic() - started < 3, "the stream should end with the job, not at its lifetime"
    assert rest[0] == ("outputs", {"count": 3})
    assert rest[1][0] == "log" and [line["message"] for line in rest[1][1]["lines"]] == ["succeeded"]
    assert rest[2][0] == "status" and (rest[2][1]["status"], rest[2][1]["progress"]) == ("succeeded", 1.0)
    assert len(rest) == 3
    response.close()
    assert open_streams(live) == 0


def test_a_finished_job_sends_its_state_and_ends(live, db, auth):
    job = add_job(db, status="failed", error="out of memory")
    response = stream(live.test_client(), f"/api/v1/events?job={job}", auth)
    assert [(n, d["status"], d["error"]) for n, d in events(response)] == [("status", "failed", "out of memory")]
    response.close()
    assert open_streams(live) == 0


def test_a_lost_status_event_is_caught_by_the_keepalive_recheck(live, db, auth):
    job = add_job(db, status="running")
    response = stream(live.test_client(), f"/api/v1/events?job={job}", auth)
    received = events(response)
    assert next(received)[1]["status"] == "running"
    assert next(received) == ("ping", {})  # a keep-alive every 0.5 s here
    with db.session() as s:  # a status change nobody published (Redis was away, say)
        s.get(Job, job).status = "cancelled"
    rest = list(received)
    assert rest[-1][0] == "status" and rest[-1][1]["status"] == "cancelled"
    assert {name for name, _ in rest[:-1]} <= {"ping"}
    response.close()


def test_a_stream_ends_after_its_lifetime(settings, redis_url, db, auth):
    short = dataclasses.replace(settings, redis_url=redis_url, event_stream_seconds=1.5, event_keepalive_seconds=5)
    app = create_app({"SETTINGS": short, "TESTING": True})
    job = add_job(db, status="queued")
    started = time.monotonic()
    response = stream(app.test_client(), f"/api/v1/events?job={job}", auth)
    assert [name for name, _ in events(response)] == ["status"]
    assert 1.4 < time.monotonic() - started < 4
    response.close()
    assert open_streams(app) == 0
    app.extensions["genq"].db.dispose()


def test_streams_beyond_the_limit_get_503_and_the_server_keeps_answering(live, db, auth):
    client = live.test_client()
    job = add_job(db, status="running")
    held = [stream(client, f"/api/v1/events?job={job}", auth) for _ in range(2)]
    for _ in range(20):
        refused = client.get(f"/api/v1/events?job={job}", headers=auth)
        assert refused.status_code == 503 and refused.json["error"] == "unavailable"
        assert int(refused.headers["Retry-After"]) > 0
    assert client.get("/healthz").status_code == 200
    assert client.get(f"/api/v1/jobs/{job}", headers=auth).status_code == 200
    metrics = client.get("/metrics").text
    assert "genq_event_streams_open 2.0" in metrics and "genq_event_streams_refused_total 20.0" in metrics
    held[0].close()  # a closed stream gives its slot back, even one whose body never ran
    again = stream(client, f"/api/v1/events?job={job}", auth)
    again.close()
    held[1].close()
    assert open_streams(live) == 0


def test_without_redis_the_stream_is_refused_and_pages_poll(client, db, auth):
    job = add_job(db, status="running")
    answer = client.get(f"/api/v1/events?job={job}", headers=auth)
    assert answer.status_code == 503 and "GENQ_REDIS_URL" in answer.json["message"]
    assert "Retry-After" in answer.headers


def test_the_list_stream_shows_the_teams_jobs_and_their_progress(live, db, auth, publish):
    mine = add_job(db, status="running", progress=0.1)
    theirs = add_job(db, team="beta", status="running")
    make_token(db, "beta")
    response = stream(live.test_client(), "/api/v1/events/jobs", auth)
    received = events(response)
    name, first = next(received)
    assert name == "jobs" and [j["id"] for j in first["jobs"]] == [mine]

    publish.publish(theirs, team_id(db, "beta"), [("progress", {"progress": 0.9, "step": 9})])  # not ours
    publish.publish(mine, team_id(db), [("progress", {"progress": 0.2, "step": 20})])
    assert next(received) == ("progress", {"id": mine, "progress": 0.2, "step": 20})

    newer = add_job(db, status="queued")
    publish.status(newer, team_id(db), "queued")
    name, update = next(n for n in received if n[0] != "ping")
    assert name == "jobs" and [j["id"] for j in update["jobs"]] == [newer, mine]
    response.close()
    assert open_streams(live) == 0


def test_the_list_stream_applies_the_filters_of_the_list(live, db, auth):
    client = live.test_client()
    add_job(db, status="running")
    done = add_job(db, status="succeeded")
    response = stream(client, "/api/v1/events/jobs?status=succeeded", auth)
    name, first = next(events(response))
    assert name == "jobs" and [j["id"] for j in first["jobs"]] == [done]
    assert first["jobs"] == client.get("/api/v1/jobs?status=succeeded", headers=auth).json["jobs"]
    response.close()
    assert client.get("/api/v1/events/jobs?status=nope", headers=auth).status_code == 422


def test_submit_and_cancel_publish_the_status_on_the_teams_channel(live, db, auth, redis_url):
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(team_channel(team_id(db)))
    client = live.test_client()
    job = submit(client, auth).json["id"]
    assert client.post(f"/api/v1/jobs/{job}/cancel", headers=auth).status_code == 202
    seen = []
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message:
            seen.append(json.loads(message["data"]))
    listener.close()
    assert seen == [{"event": "status", "job": job, "data": {"status": "queued"}},
                    {"event": "status", "job": job, "data": {"status": "cancelled"}}]


def test_publishing_without_redis_neither_raises_nor_waits():
    publisher = Publisher("redis://127.0.0.1:1/0", timeout=0.2, pause=60)
    started = time.monotonic()
    for _ in range(100):  # the first fails fast; the rest are skipped while it pauses
        publisher.status(1, 1, "running")
    assert time.monotonic() - started < 1


def test_the_operators_list_stream_holds_every_teams_jobs(live, db, publish):
    operator = bearer(make_token(db, "admin", "admin"))
    alpha, beta = add_job(db, status="running"), add_job(db, team="beta", status="running")
    response = stream(live.test_client(), "/api/v1/events/jobs", operator)
    received = events(response)
    name, first = next(received)
    assert name == "jobs" and [j["id"] for j in first["jobs"]] == [beta, alpha]
    publish.publish(beta, team_id(db, "beta"), [("progress", {"progress": 0.5, "step": 5})])
    assert next(n for n in received if n[0] != "ping") == ("progress", {"id": beta, "progress": 0.5, "step": 5})
    response.close()
    filtered = stream(live.test_client(), "/api/v1/events/jobs?team=beta", operator)
    assert [j["id"] for j in next(events(filtered))[1]["jobs"]] == [beta]
    filtered.close()
    assert open_streams(live) == 0


@pytest.mark.parametrize("which", ["list", "job"])
def test_a_stream_ends_soon_after_its_token_is_revoked(live, db, publish, which):
    """A revoked token's open stream stops sending within a check interval (the keep-alive, 0.5 s here), not at
    the end of its lifetime (8 s here); the reconnect is refused."""
    from genq.api_tokens import list_tokens, revoke_token

    member = bearer(make_token(db, "alpha", "member"))
    job = add_job(db, status="running")
    url = "/api/v1/events/jobs" if which == "list" else f"/api/v1/events?job={job}"
    response = stream(live.test_client(), url, member)
    received = events(response)
    assert next(received)[0] in ("jobs", "status")
    alpha, stop = team_id(db), threading.Event()

    def progress():  # step N is published about N/10 s after the revocation
        for step in range(1, 100):
            if stop.wait(0.1):
                return
            publish.publish(job, alpha, [("progress", {"progress": step / 100, "step": step})])

    with db.session() as s:
        revoke_token(s, next(t.id for t in list_tokens(s, "alpha") if t.role == "member"))
    revoked = time.monotonic()
    publisher = threading.Thread(target=progress, daemon=True)
    publisher.start()
    try:
        steps = [data["step"] for name, data in received if name == "progress"]
    finally:
        stop.set()
        publisher.join()
    assert time.monotonic() - revoked < 4, "the stream went on after its token was revoked"
    assert max(steps, default=0) < 25, steps
    response.close()
    assert open_streams(live) == 0
    assert live.test_client().get(url, headers=member).status_code == 401
