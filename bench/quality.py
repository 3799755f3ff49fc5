"""Model quality through the platform's job path: `genq up`, submit over HTTP, read the job's metrics.

Not part of the test suite (minutes per model on a CPU). Prints, for each model, the number the issue asks
for next to its target, and the wall time next to the reference time where there is one.

    .venv/bin/python bench/quality.py            # all models
    .venv/bin/python bench/quality.py gpt gru    # some of them

GENQ_BENCH_HOME=DIR keeps the platform's data there (to look at the jobs' pages afterwards with `genq up`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genq.client import Client, wait_until_serving
from genq.redis_server import free_port

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"

# name: (model, dataset, params, metric, target, better, reference seconds or None)
RUNS = {
    # nanoGPT's shakespeare_char CPU recipe: 1.88 validation loss after 2000 steps, about 3 minutes here.
    "gpt": ("gpt", "corpus", dict(tokenizer="char", n_layer=4, n_head=4, n_embd=128, block_size=64,
                                  batch_size=12, lr=1e-3, dropout=0.0, max_steps=2000, eval_interval=250,
                                  eval_iters=20), "val/loss", 1.88, "lower", 180.0),
    # The article's GRU at a CPU size (its 512-unit, batch-64 default takes ~0.4 s a step on two cores).
    "gru": ("gru", "corpus", dict(tokenizer="char", n_embd=128, hidden_size=256, batch_size=32, lr=3e-3,
                                  max_steps=1000), "val/loss", 2.0, "lower", 240.0),
    "dcgan": ("dcgan", "digits", dict(conditional="prompt"), "eval/class_accuracy", 0.90, "higher", None),
    "vae": ("vae", "digits", dict(), "eval/reconstruction_accuracy", 0.90, "higher", None),
    "wavenet": ("wavenet", "tones", dict(conditional=True), "eval/pitch_accuracy", 0.80, "higher", None),
}


def start_platform(home: Path) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    env = {**os.environ, "GENQ_HOME": str(home), "GENQ_PORT": str(port)}
    env.pop("GENQ_REDIS_URL", None)
    env.pop("GENQ_DATABASE_URL", None)
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "up.log", "wb")  # noqa: SIM115 - the platform's output, for when a run goes wrong
    process = subprocess.Popen([sys.executable, "-m", "genq", "up"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if wait_until_serving(url, process, timeout=300):
        return process, Client(url, (home / "admin-token").read_text().strip())
    process.kill()
    raise SystemExit("genq up did not start")


def run(client: Client, name: str, corpus_id: int) -> None:
    model, dataset, params, metric, target, better, reference = RUNS[name]
    start = time.monotonic()
    job_id = client.submit({"type": "train", "model": model, "params": params,
                            "dataset": corpus_id if dataset == "corpus" else dataset})["id"]
    while (job := client.job(job_id))["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(2)
    wall = time.monotonic() - start
    if job["status"] != "succeeded":
        print(f"{name:8} job {job_id} {job['status']}: {job['error']}")
        return
    series = client.metrics(job_id, max_points=10_000)
    value = series[metric][-1][1]
    ok = value <= target if better == "lower" else value >= target
    timing = f"{wall:6.0f} s" + (f" ({wall / reference:.2f}x the {reference:.0f} s reference)" if reference else "")
    extra = ", ".join(f"{k}={v[-1][1]:.3g}" for k, v in sorted(series.items()) if k.startswith("eval/") and k != metric)
    print(f"{name:8} job {job_id}: {metric} = {value:.4f} (target {'<=' if better == 'lower' else '>='} {target})"
          f" {'PASS' if ok else 'MISS'}; wall {timing}; {extra}", flush=True)


def main(names: list[str]) -> None:
    names = names or list(RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(os.environ.get("GENQ_BENCH_HOME") or tmp)
        process, client = start_platform(home)
        try:
            corpus_id = client.upload(CORPUS)["id"] if {"gpt", "gru"} & set(names) else 0
            for name in names:
                run(client, name, corpus_id)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)


if __name__ == "__main__":
    main(sys.argv[1:])
