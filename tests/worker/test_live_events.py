"""Live events with the real platform: a gunicorn web server, the scheduler and a Celery worker as separate
processes on a real Redis. A subscriber sees a training job run; a storm of stream attempts leaves the web
serving; with GENQ_CELERY_EVENTS=1 the worker's Celery events (what Flower reads) reach Redis."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from genq.worker.celery_app import TASK_NAME, make_celery
from tests.worker.platform import CORPUS, tiny_gpt


def read_events(response):
    """(name, data) of each event of a requests stream, as it arrives."""
    name, data = None, None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and name is not None:
            yield name, data
            name, data = None, None


def test_a_subscriber_sees_a_training_job_run_live(platform):
    dataset = platform.upload_text(CORPUS.read_text())
    job = platform.submit({"type": "train", "model": "gpt", "dataset": dataset,
                           "params": tiny_gpt(max_steps=800, eval_interval=200, checkpoint_interval=400)})
    response = requests.get(f"{platform.url}/api/v1/events?job={job}", stream=True, timeout=(5, 60),
                            headers={"Authorization": f"Bearer {platform.token}"})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    received: list[tuple[float, str, dict]] = []

    def listen():
        for name, data in read_events(response):
            received.append((time.monotonic(), name, data))
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    platform.wait_for(lambda: received, 10, "the first event")
    assert received[0][1] == "status" and received[0][2]["status"] == "queued"  # the state when it connected

    platform.start_scheduler()
    platform.start_worker()
    listener.join(240)
    assert not listener.is_alive(), "the stream did not end after the job finished\n" + platform.logs()
    names = [name for _, name, _ in received]
    statuses = [data["status"] for _, name, data in received if name == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
    assert "running" in statuses and names[-1] == "status", names

    progress = [data for _, name, data in received if name == "progress"]
    assert len(progress) >= 2, names
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert any(0 < p["progress"] < 1 for p in progress) and progress[-1]["step"] > progress[0]["step"]
    points = [pt for _, name, data in received if name == "metrics" for pt in data["series"].get("train/loss", [])]
    recorded = platform.api("GET", f"/jobs/{job}/metrics").json()["series"]["train/loss"]
    assert points and points[-1] == recorded[-1]  # what a page appends is what the rows hold
    assert any(name == "log" for name in names) and any(name == "outputs" for name in names)
    final = received[-1][2]
    assert (final["progress"], final["step"], final["finished"]) == (1.0, 800, True)
    first_running = next(t for t, name, data in received if name == "status" and data["status"] == "running")
    assert received[-1][0] - first_running > 1, "the job should have run for more than one flush"


def test_many_stream_attempts_leave_the_web_serving(platform):
    # One gunicorn process with 8 threads: at most 4 streams; keep-alives every second find closed ones fast.
    platform.start_web(GENQ_EVENT_KEEPALIVE_SECONDS="1")
    job = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": tiny_gpt()})
    url, headers = f"{platform.url}/api/v1/events?job={job}", {"Authorization": f"Bearer {platform.token}"}
    held = [requests.get(url, headers=headers, stream=True, timeout=(5, 30)) for _ in range(4)]
    assert [r.status_code for r in held] == [200] * 4
    streams = [read_events(r) for r in held]
    assert all(next(s)[1]["status"] == "queued" for s in streams)

    health: list[tuple[int, float]] = []
    storm_over = threading.Event()

    def probe():
        while not storm_over.is_set():
            started = time.monotonic()
            health.append((requests.get(f"{platform.url}/healthz", timeout=30).status_code,
                           time.monotonic() - started))
            time.sleep(0.2)

    def attempt(_):
        answer = requests.get(url, headers=headers, timeout=60)
        return answer.status_code, answer.headers.get("Retry-After")
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(attempt, range(1000)))
    storm_over.set()
    prober.join(30)
    assert {status for status, _ in answers} == {503} and all(int(after) > 0 for _, after in answers)
    assert health and all(status == 200 for status, _ in health), health
    assert max(seconds for _, seconds in health) < 10, health
    assert all(next(s) == ("ping", {}) for s in streams)  # the streams held meanwhile still live

    for response in held:
        response.close()
    # The server notices the closed connections at their next keep-alive and gives the slots back.
    platform.wait_for(lambda: "genq_event_streams_open 0.0" in requests.get(f"{platform.url}/metrics").text,
                      15, "the closed streams' slots to be free")
    again = requests.get(url, headers=headers, stream=True, timeout=(5, 30))
    assert again.status_code == 200
    again.close()


def test_stopping_the_web_ends_its_streams_at_once(platform):
    import signal

    job = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": tiny_gpt()})
    response = requests.get(f"{platform.url}/api/v1/events?job={job}", stream=True, timeout=(5, 60),
                            headers={"Authorization": f"Bearer {platform.token}"})
    events = read_events(response)
    assert next(events)[0] == "status"
    (web,) = platform.processes
    started = time.monotonic()
    web.send_signal(signal.SIGTERM)  # gunicorn would wait its graceful timeout (30 s) for an open stream
    assert list(events) == []
    assert web.wait(15) == 0
    assert time.monotonic() - started < 10


def test_workers_send_celery_events_for_flower_when_asked(platform, redis_url):
    seen: list[dict] = []
    app = make_celery(redis_url)
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        capture = threading.Thread(target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True)
        capture.start()
        platform.spawn("scheduler", "--interval", "0.2", GENQ_CELERY_EVENTS="1")
        platform.spawn("worker", "--name", "cpu0", GENQ_CELERY_EVENTS="1")
        job = platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc",
                               "params": tiny_gpt(max_steps=5, eval_interval=5, checkpoint_interval=5)})
        assert platform.wait_status(job, ("succeeded", "failed"))["status"] == "succeeded"
        platform.wait_for(lambda: any(e["type"] == "task-succeeded" for e in seen), 30, "task-succeeded")
        receiver.should_stop = True
        capture.join(10)
    types = {e["type"] for e in seen}
    assert {"task-sent", "task-received", "task-started", "task-succeeded", "worker-heartbeat"} <= types, types
    sent = next(e for e in seen if e["type"] == "task-sent")
    assert sent["name"] == TASK_NAME


def test_celery_events_are_off_unless_asked(monkeypatch):
    monkeypatch.delenv("GENQ_CELERY_EVENTS", raising=False)
    conf = make_celery("redis://127.0.0.1:1/0").conf
    assert conf.worker_send_task_events is False and conf.task_send_sent_event is False
