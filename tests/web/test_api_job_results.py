"""GET /api/v1/jobs and below: one job, the list, cancel, metrics, outputs, artifacts, logs, workers."""

from __future__ import annotations

import pytest

from genq.db.models import Job, JobLog, Worker
from tests.web.conftest import add_artifact, add_job, add_metrics, add_output, add_worker, png, submit, wav


def test_get_job_and_queue_position(client, auth, db):
    first = submit(client, auth).json["id"]
    second = submit(client, auth).json["id"]
    urgent = submit(client, auth, priority=9).json["id"]
    positions = {
        j: client.get(f"/api/v1/jobs/{j}", headers=auth).json["queue_position"]
        for j in (first, second, urgent)
    }
    assert positions == {urgent: 0, first: 1, second: 2}
    running = add_job(db, status="running", progress=0.5, step=10, attempts=1)
    job = client.get(f"/api/v1/jobs/{running}", headers=auth).json
    assert (job["status"], job["progress"], job["step"], job["attempts"], job["queue_position"]) == (
        "running",
        0.5,
        10,
        1,
        None,
    )


def test_list_filters_and_pagination(client, auth, other_auth, db):
    ids = [add_job(db, status="succeeded" if i % 2 else "queued") for i in range(7)]
    gen = add_job(db, type="generate", status="queued")
    add_job(db, team="beta")
    page = client.get("/api/v1/jobs?limit=3", headers=auth).json
    assert [j["id"] for j in page["jobs"]] == [gen, ids[6], ids[5]] and page["next"] == ids[5]
    seen = [j["id"] for j in page["jobs"]]
    while page["next"]:
        page = client.get(f"/api/v1/jobs?limit=3&before={page['next']}", headers=auth).json
        seen += [j["id"] for j in page["jobs"]]
    assert seen == sorted(ids + [gen], reverse=True)
    assert {j["status"] for j in client.get("/api/v1/jobs?status=succeeded", headers=auth).json["jobs"]} == {
        "succeeded"
    }
    assert [j["id"] for j in client.get("/api/v1/jobs?type=generate", headers=auth).json["jobs"]] == [gen]
    assert len(client.get("/api/v1/jobs?team=alpha", headers=auth).json["jobs"]) == 8
    assert client.get("/api/v1/jobs?team=beta", headers=auth).json == {"jobs": [], "next": None}
    for many in ("100000", "9" * 5000):  # clamped to 200, however many digits
        assert len(client.get(f"/api/v1/jobs?limit={many}", headers=auth).json["jobs"]) == 8
    for bad in ("status=done", "type=x", "limit=0", "limit=abc", "before=-3", "limit=-" + "9" * 5000):
        answer = client.get(f"/api/v1/jobs?{bad}", headers=auth)
        assert answer.status_code == 422, bad


def test_cancel_queued_job_at_once(client, auth, db):
    job_id = submit(client, auth).json["id"]
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert answer.status_code == 202
    assert answer.json["status"] == "cancelled" and answer.json["finished_at"] is not None
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and "already cancelled" in again.json["message"]


def test_cancel_running_job_asks_the_worker(client, auth, db):
    job_id = add_job(db, status="running", worker_id="w1")
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert answer.status_code == 202
    assert answer.json["status"] == "running" and answer.json["cancel_requested"] is True
    with db.session() as s:
        assert s.get(Job, job_id).cancel_requested
    generating = add_job(db, type="generate", status="running", worker_id="w1")
    assert client.post(f"/api/v1/jobs/{generating}/cancel", headers=auth).status_code == 202
    said = {job: [line["message"] for line in client.get(f"/api/v1/jobs/{job}/logs", headers=auth).json["logs"]]
            for job in (job_id, generating)}
    assert said == {job_id: ["cancel requested; it saves a checkpoint and stops"],
                    generating: ["cancel requested; it stops, keeping the outputs stored so far"]}, said


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_conflicts(client, auth, db, status):
    job_id = add_job(db, status=status)
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert answer.status_code == 409 and status in answer.json["message"]


def test_metrics_ordered_and_downsampled(client, auth, db):
    job_id = add_job(db, status="running")
    add_metrics(db, job_id, "train/loss", [float(100 - i) for i in range(100)], start=0, every=10)
    add_metrics(db, job_id, "val/loss", [3.0, 2.0, float("inf")], start=0, every=250)
    add_metrics(db, job_id, "train/loss", [0.5], start=990)  # re-logged after a resume: the latest wins
    series = client.get(f"/api/v1/jobs/{job_id}/metrics", headers=auth).json["series"]
    assert len(series["train/loss"]) == 100 and series["train/loss"][0] == [0, 100.0]
    assert series["train/loss"][-1] == [990, 0.5]
    assert series["val/loss"] == [[0, 3.0], [250, 2.0], [500, None]]  # inf is not JSON
    small = client.get(f"/api/v1/jobs/{job_id}/metrics?max_points=10", headers=auth).json["series"]
    steps = [p[0] for p in small["train/loss"]]
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 990 and steps == sorted(steps)
    assert client.get(f"/api/v1/jobs/{job_id}/metrics?max_points=1", headers=auth).json["series"][
        "train/loss"
    ] == [[990, 0.5]]
    only = client.get(f"/api/v1/jobs/{job_id}/metrics?name=val/loss", headers=auth).json["series"]
    assert list(only) == ["val/loss"]
    assert client.get(f"/api/v1/jobs/{job_id}/metrics?max_points=0", headers=auth).status_code == 422
    assert client.get(f"/api/v1/jobs/{job_id}/metrics?name=a%00b", headers=auth).json == {"series": {}}


def test_outputs_artifacts_and_download(client, auth, db, settings):
    job_id = add_job(db, type="generate", status="succeeded", model="dcgan")
    image = png(color=200)
    art = add_artifact(db, settings, job_id, "out-0.png", image, "image/png")
    sound = add_artifact(db, settings, job_id, "out-1.wav", wav(), "audio/wav")
    add_output(db, job_id, 1, "audio", prompt="tone", artifact_id=sound)
    add_output(db, job_id, 0, "image", prompt="seven", artifact_id=art)
    text = add_output(db, job_id, 2, "text", prompt="Once", text="Once upon a time")
    outputs = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=auth).json["outputs"]
    assert [o["index"] for o in outputs] == [0, 1, 2]
    assert outputs[0]["url"] == f"/api/v1/artifacts/{art}/download" and outputs[0]["prompt"] == "seven"
    assert outputs[2] == {"id": text, "index": 2, "prompt": "Once", "kind": "text", "text": "Once upon a time",
                          "row": None, "row_id": None, "status": "ok", "error": None}
    got = client.get(outputs[0]["url"], headers=auth)
    assert got.status_code == 200 and got.data == image and got.mimetype == "image/png"
    part = client.get(outputs[0]["url"], headers={**auth, "Range": "bytes=1-3"})
    assert part.status_code == 206 and part.data == image[1:4]
    for unread in ("bytes=abc", "items=0-1", "bytes=3-1"):  # ignored (RFC 9110): the whole file
        whole = client.get(outputs[0]["url"], headers={**auth, "Range": unread})
        assert whole.status_code == 200 and whole.data == image, unread
    past = client.get(outputs[0]["url"], headers={**auth, "Range": f"bytes={len(image)}-"})
    assert past.status_code == 416 and past.json == {
        "error": "range_not_satisfiable",
        "message": f"the Range header 'bytes={len(image)}-' asks for bytes past the file's end"}
    assert client.get(outputs[1]["url"], headers=auth).mimetype == "audio/wav"
    listed = client.get(f"/api/v1/jobs/{job_id}/artifacts", headers=auth).json["artifacts"]
    assert [(a["id"], a["name"], a["media_type"]) for a in listed] == [
        (art, "out-0.png", "image/png"),
        (sound, "out-1.wav", "audio/wav"),
    ]


def test_download_refuses_paths_outside_the_store(client, auth, db, settings):
    job_id = add_job(db)
    secret = settings.home.parent / "secret.txt"
    secret.write_text("top secret")
    from genq.db.models import Artifact

    with db.session() as s:
        rows = [
            Artifact(
                job_id=job_id, kind="output", name="x", path="../../secret.txt", media_type="text/plain"
            ),
            Artifact(job_id=job_id, kind="output", name="y", path="jobs/none.bin"),
        ]
        s.add_all(rows)
        s.flush()
        ids = [a.id for a in rows]
    for artifact_id in ids:
        answer = client.get(f"/api/v1/artifacts/{artifact_id}/download", headers=auth)
        assert answer.status_code == 404 and b"top secret" not in answer.data


def test_logs_after(client, auth, db):
    job_id = submit(client, auth).json["id"]
    with db.session() as s:
        s.add_all(JobLog(job_id=job_id, message=f"step {i}") for i in range(3))
    logs = client.get(f"/api/v1/jobs/{job_id}/logs", headers=auth).json["logs"]
    assert [entry["message"] for entry in logs][1:] == ["step 0", "step 1", "step 2"]
    assert set(logs[0]) == {"id", "time", "message"}
    newer = client.get(f"/api/v1/jobs/{job_id}/logs?after={logs[1]['id']}", headers=auth).json["logs"]
    assert [entry["message"] for entry in newer] == ["step 1", "step 2"]
    assert client.get(f"/api/v1/jobs/{job_id}/logs?after={logs[-1]['id']}", headers=auth).json["logs"] == []


def test_workers(client, auth, db):
    add_worker(db, "host:1:ab", "H100", 80, slots=2)
    mine = add_job(db, status="running", worker_id="host:1:ab")
    add_job(db, team="beta", status="running", worker_id="host:1:ab")
    [worker] = client.get("/api/v1/workers", headers=auth).json["workers"]
    assert worker["devices"][0]["name"] == "H100" and worker["slots"] == 2 and worker["last_heartbeat"]
    assert worker["running"] == 2 and worker["running_jobs"] == [mine]


def test_a_hosts_last_seen_is_its_workers_latest_heartbeat(client, auth, db):
    from datetime import datetime

    from genq.db.models import WorkerHost

    add_worker(db, "host:1:ab", "H100", 80)
    with db.session() as s:
        beat = s.get(Worker, "host:1:ab").last_heartbeat
        s.add(WorkerHost(hostname="host", version="x", pools=["default"], devices=[], draining=False,
                         registered_at=datetime(2026, 1, 1), last_seen=datetime(2026, 1, 1)))
    [host] = client.get("/api/v1/workers", headers=auth).json["hosts"]
    assert host["last_seen"].startswith(beat.isoformat()[:19])  # not the registration's 2026-01-01


def test_unknown_routes_and_methods_are_json(client, auth):
    for method, path, status in [
        ("get", "/api/v1/nope", 404),
        ("delete", "/api/v1/jobs", 405),
        ("get", "/api/v1/jobs/0", 404),
        ("get", "/api/v1/jobs/99999999999", 404),
        ("get", "/api/v1/jobs/abc", 404),
        ("put", "/api/v1/jobs/1/cancel", 405),
    ]:
        answer = getattr(client, method)(path, headers=auth)
        assert answer.status_code == status and answer.is_json and answer.json["error"]
    for method, path, number in [("get", "/api/v1/jobs/0", "0"),
                                 ("get", "/api/v1/jobs/99999999999999999999/logs", "99999999999999999999"),
                                 ("delete", "/api/v1/datasets/0", "0"),  # not a 405: the GET rule has that path
                                 ("get", "/api/v1/jobs/" + "9" * 5000, "9" * 5000)]:  # more digits than int() reads
        answer = getattr(client, method)(path, headers=auth)
        assert answer.status_code == 404, answer.json
        assert answer.json["message"] == f"nothing has the id {number}: ids run from 1 to 2147483647", answer.json
    refused = client.post("/api/v1/jobs/1/logs", headers=auth)
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD, OPTIONS", refused.headers
    assert refused.json["message"] == "POST is not allowed on /api/v1/jobs/1/logs: it takes GET, HEAD, OPTIONS"
