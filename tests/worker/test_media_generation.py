"""Generating audio through the real platform: a cancelled job keeps the whole prompts it finished and counts
them in rows_done, and its progress moves while a long clip decodes."""

from __future__ import annotations

from sqlalchemy import select

from genq.db import Output

PROMPTS = 6


def test_a_cancelled_audio_job_keeps_and_counts_its_whole_prompts(platform):
    platform.start_scheduler()
    platform.start_worker()
    train = platform.submit({"type": "train", "model": "wavenet", "dataset": "tones",
                             "params": {"n_layers": 4, "residual_channels": 8, "segment_length": 128,
                                        "batch_size": 4, "max_steps": 2, "eval_interval": 2,
                                        "checkpoint_interval": 2, "conditional": True}})
    job = platform.wait_status(train, ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", job["error"]

    # 6 notes of 4 s clips (32,000 samples each): seconds per prompt on a CPU
    gen = platform.submit({"type": "generate", "source_job": train, "prompts": ["A4", "C4", "e5"] * 2,
                           "params": {"num_samples": 1, "seconds": 4.0}})
    platform.wait_for(lambda: 0 < platform.job(gen)["progress"] < 1 / PROMPTS, 120,
                      "progress within the first prompt")
    platform.wait_for(lambda: platform.job(gen)["progress"] >= 1 / PROMPTS, 120, "the first prompt decoded")
    assert platform.api("POST", f"/jobs/{gen}/cancel").status_code in (200, 202)
    job = platform.wait_status(gen, ("cancelled", "succeeded", "failed"), timeout=120)
    with platform.db.session() as s:
        kept = s.execute(select(Output.row, Output.kind).where(Output.job_id == gen).order_by(Output.index)).all()
    assert job["status"] == "cancelled" and 1 <= len(kept) < PROMPTS, (job, kept)
    assert kept == [(row, "audio") for row in range(len(kept))]
    assert (job["rows_total"], job["rows_done"]) == (PROMPTS, len(kept))
    listed = platform.api("GET", f"/jobs/{gen}/outputs").json()["outputs"]
    assert [o["row"] for o in listed] == list(range(len(kept)))
