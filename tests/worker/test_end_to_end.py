"""The whole path with real processes: HTTP API → database → scheduler → Redis → Celery worker → core."""

from __future__ import annotations

from genq.db.models import Dataset
from tests.web.test_api_metrics import brute_force
from tests.worker.platform import CORPUS, tiny_gpt


def test_upload_train_generate_through_the_api(platform):
    corpus = CORPUS.read_text()
    dataset = platform.upload_text(corpus)
    platform.start_scheduler()
    platform.start_worker()

    train = platform.submit({"type": "train", "model": "gpt", "dataset": dataset, "params": tiny_gpt(max_steps=120)})
    job = platform.wait_status(train, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["progress"] == 1.0 and job["step"] == 120

    series = platform.api("GET", f"/jobs/{train}/metrics").json()["series"]
    loss = [value for _, value in series["train/loss"]]
    assert loss[-1] < 0.8 * loss[0], f"training loss did not fall: {loss[0]:.3f} -> {loss[-1]:.3f}"
    assert series["val/loss"] and series["val/perplexity"]
    # The worker's flushes kept the block summaries the charts read: buckets agree with every point.
    chart = platform.api("GET", f"/jobs/{train}/metrics?points=7&name=train/loss").json()
    every = {step: value for step, value in series["train/loss"]}
    assert (chart["series"]["train/loss"], chart["bands"]["train/loss"]) == \
        brute_force(every, 0, max(every), chart["bucket"]["train/loss"])
    # a CPU worker: what the job used (its process' peak resident set rise), and no MFU without a GPU's peak
    assert series["memory/peak_bytes"] and series["memory/peak_bytes"][-1][1] > 0
    assert "throughput/mfu" not in series
    artifacts = platform.api("GET", f"/jobs/{train}/artifacts").json()["artifacts"]
    assert any(a["kind"] == "checkpoint" for a in artifacts)

    generate = platform.submit({"type": "generate", "source_job": train, "prompts": ["ROMEO:", "First"],
                                "params": {"num_samples": 2, "max_new_tokens": 40, "seed": 7}})
    job = platform.wait_status(generate, ("succeeded", "failed"), timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert platform.api("GET", f"/jobs/{generate}/metrics").json()["series"]["memory/peak_bytes"][0][1] >= 0
    outputs = platform.api("GET", f"/jobs/{generate}/outputs").json()["outputs"]
    assert [o["prompt"] for o in outputs] == ["ROMEO:", "ROMEO:", "First", "First"]
    alphabet = set(corpus)
    for output in outputs:
        assert output["kind"] == "text" and output["text"].startswith(output["prompt"])
        assert len(output["text"]) >= len(output["prompt"]) + 40 - 1
        assert set(output["text"]) <= alphabet, "generated text decodes to characters outside the corpus"


def test_a_job_failing_in_the_worker_shows_its_error(platform):
    # bpe merges "abab...ab" (one word, 800 bytes) into a few tokens, which cannot fill one block of 64: the worker
    # fails the job with a message a person can act on (a text with too few bytes is refused at submission).
    dataset = platform.upload_text("ab" * 400)
    platform.start_scheduler()
    platform.start_worker()
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": dataset,
                              "params": tiny_gpt(block_size=64, tokenizer="bpe", vocab_size=300)})
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=120)
    assert job["status"] == "failed"
    assert "block_size" in job["error"] or "too short" in job["error"], job["error"]
    assert job["finished_at"] is not None

    # a dataset whose stored file is gone fails at once, saying so: no retries, no "stopped answering"
    lost = platform.upload_text(CORPUS.read_text(), name="lost.txt")
    with platform.db.session() as s:
        (platform.home / "artifacts" / s.get(Dataset, lost).path).unlink()
    job_id = platform.submit({"type": "train", "model": "gpt", "dataset": lost, "params": tiny_gpt()})
    job = platform.wait_status(job_id, ("succeeded", "failed"), timeout=60)
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert job["error"].startswith(f"dataset {lost} cannot be read: datasets/") and job["error"].endswith(
        "is not in the artifact store; upload it again"), job["error"]


def test_a_worker_with_two_slots_runs_two_jobs_at_once_and_stops_cleanly(platform):
    import signal

    from sqlalchemy import select

    from genq.db import Job

    platform.start_scheduler()
    supervisor = platform.spawn("worker", "--slots", "2")
    platform.wait_for(lambda: len(platform.api("GET", "/workers").json()["workers"]) == 2, 60, "two worker slots")
    params = tiny_gpt(max_steps=100_000, checkpoint_interval=1000)
    jobs = [platform.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": params})
            for _ in range(3)]

    def running():
        with platform.db.session() as s:
            return s.scalars(select(Job.status).where(Job.id.in_(jobs))).all().count("running") == 2
    platform.wait_for(running, 60, "two jobs running at once")
    assert platform.job(jobs[2])["status"] == "queued" and platform.job(jobs[2])["queue_position"] == 0

    supervisor.send_signal(signal.SIGTERM)  # the supervisor stops both slots; their jobs go back to the queue
    assert supervisor.wait(90) == 0
    assert {platform.job(j)["status"] for j in jobs} == {"queued"}
