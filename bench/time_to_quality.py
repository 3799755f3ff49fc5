"""Time to quality on this machine's CPU (a script, not a test): how soon a genq `gpt` job reaches the
validation loss nanoGPT's network ends its whole run with.

    .venv/bin/python bench/time_to_quality.py --corpus tinyshakespeare.txt [--seed N] [--threads N] [--steps N]

First nanoGPT's classic network (bench/quality_text.py's ClassicGPT: learned positions, GELU MLP, AdamW)
trains in this process with nanoGPT's shakespeare_char CPU recipe (4 layers, 4 heads, 128 wide, block 64,
batch 12, lr 1e-3 cosine to 1e-4 after 100 warmup steps, 2000 steps), evaluating every 100 steps on 20 batches
as nanoGPT does (the last evaluation too), drawing no samples; its time runs from the start of the build to
the end of the last evaluation. Then the same recipe (the same params) runs as a genq job through `genq up`
and the HTTP API, with the job's defaults for everything the recipe does not set (its network, its optimizer,
its gallery of samples at every evaluation, its checkpoints, its final evaluation and samples). Its
time to quality runs from the job's started_at to the log line of the first evaluation at or under nanoGPT's
best validation loss of this run. The job is submitted once the platform has settled (a worker online, the CPUs
mostly idle again): a user's platform is up before its jobs come, and its start is not theirs to pay.
Goals: genq there in a quarter of nanoGPT's whole run or less (>= 4x), and genq's best val/loss <= 1.60.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from genq.worker.process import SPIN_COUNT  # noqa: E402 - imports no torch

# The worker's OpenMP setting (genq.worker.process.worker_children), before torch starts its threads: the
# in-process runs compared with a job spin as long as the job's threads before they sleep.
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from quality import start_platform, stolen_seconds, succeeded, wait_until_settled  # noqa: E402 - a sibling script
from quality_text import PeerRecipe  # noqa: E402

from genq.core import api  # noqa: E402
from genq.core.eval.text import val_loss  # noqa: E402
from genq.core.recipe import fit  # noqa: E402

RECIPE = {"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12,
          "lr": 1e-3, "dropout": 0.0, "max_steps": 2000, "eval_interval": 100, "eval_iters": 20,
          "checkpoint_interval": 1000, "warmup_steps": 100, "min_lr": 1e-4, "weight_decay": 0.1,
          "grad_clip": 1.0}
SPEEDUP_GOAL, LOSS_GOAL = 4.0, 1.60
EVAL_LINE = re.compile(r"^step (\d+): val/loss ([0-9.]+)")


class NanoGPT(PeerRecipe):
    """nanoGPT's network and optimizer on genq's data pipeline and schedule, evaluated as nanoGPT does (its
    trained weights, no average; the eval_iters-batch estimate at every evaluation, the last one too) and
    drawing no samples (nanoGPT draws none while training, and its train.py none at the end)."""

    def build(self, data, resumed):
        self.p = {**self.p, "optimizer": "adamw", "ema_decay": 0.0}
        super().build(data, resumed)

    def evaluate(self, step):
        return val_loss(self.net, self.ds.val_batches(self.p["eval_iters"]))

    def gallery(self, step, folder):
        return []

    def finish(self, result, folder):
        return []


class Curve(api.Hooks):
    """(seconds since the start, step, val/loss) of every evaluation."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, int, float]] = []

    def metrics(self, step, values):
        if "val/loss" in values:
            self.points.append((time.perf_counter() - self.t0, step, values["val/loss"]))
            print(f"  step {step:5d}  val/loss {values['val/loss']:.4f}  {self.points[-1][0]:6.1f} s", flush=True)


def nanogpt_run(corpus: Path, params: dict) -> tuple[float, list[tuple[float, int, float]]]:
    """Train nanoGPT's network here: (wall seconds, the evaluations)."""
    print("nanoGPT's network and recipe, in this process:", flush=True)
    curve = Curve()
    with tempfile.TemporaryDirectory() as tmp:
        fit(NanoGPT, params, api.DataSource(kind="text", path=corpus), Path(tmp), curve, "cpu")
    return time.perf_counter() - curve.t0, curve.points


def genq_job(corpus: Path, params: dict) -> tuple[float, list[tuple[float, int, float]], dict]:
    """Run the recipe as a genq job: (finished_at - started_at, the evaluations timed from started_at, job)."""
    print("genq's gpt, as a job through the platform:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        process, client = start_platform(Path(tmp) / "home")
        try:
            dataset = client.upload(corpus)["id"]
            wait_until_settled(client)
            job_id = client.submit({"type": "train", "model": "gpt", "params": params, "dataset": dataset})["id"]
            job = succeeded(client, job_id)
            logs = client.logs(job_id)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    points = []
    for line in logs:
        if m := EVAL_LINE.match(line["message"]):
            at = (datetime.fromisoformat(line["time"]) - started).total_seconds()
            points.append((at, int(m[1]), float(m[2])))
            print(f"  step {points[-1][1]:5d}  val/loss {points[-1][2]:.4f}  {at:6.1f} s", flush=True)
    return (finished - started).total_seconds(), points, job


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("GENQ_BENCH_CORPUS"),
                    help="the whole tinyshakespeare.txt (default: $GENQ_BENCH_CORPUS)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for nanoGPT's run")
    ap.add_argument("--steps", type=int, default=RECIPE["max_steps"], help="a shorter run, to try the script")
    args = ap.parse_args()
    if not (args.corpus and Path(args.corpus).is_file()):
        ap.error("the benchmark needs the whole tinyshakespeare.txt: pass --corpus PATH or set GENQ_BENCH_CORPUS")
    torch.set_num_threads(args.threads)
    params = {**RECIPE, "seed": args.seed, "max_steps": args.steps}
    corpus = Path(args.corpus)
    stolen = [stolen_seconds()]  # CPU seconds the hypervisor gave other guests: drift neither run could help
    nano_wall, nano = nanogpt_run(corpus, params)
    stolen.append(stolen_seconds())
    job_wall, ours, _ = genq_job(corpus, params)
    stolen.append(stolen_seconds())
    target = min(loss for _, _, loss in nano)
    reached = next(((t, s) for t, s, loss in ours if loss <= target), None)
    best = min(loss for _, _, loss in ours)
    print(f"\nseed {args.seed}, {params['max_steps']} steps, evaluations every {params['eval_interval']}")
    print(f"nanoGPT: best val/loss {target:.4f}, whole run {nano_wall:.1f} s")
    print(f"genq job: best val/loss {best:.4f} (goal <= {LOSS_GOAL}) {'PASS' if best <= LOSS_GOAL else 'MISS'}, "
          f"whole job {job_wall:.1f} s (started_at to finished_at)")
    if stolen[-1] > stolen[0]:
        print(f"stolen by the hypervisor: {stolen[1] - stolen[0]:.1f} CPU seconds over nanoGPT's run, "
              f"{stolen[2] - stolen[1]:.1f} over the genq job's (the platform's start and stop included)")
    if reached is None:
        print(f"genq never reached {target:.4f}: MISS")
        return 1
    speedup = nano_wall / reached[0]
    print(f"genq reached {target:.4f} at step {reached[1]}, {reached[0]:.1f} s after started_at: "
          f"{speedup:.2f}x sooner than nanoGPT's whole run (goal >= {SPEEDUP_GOAL}x) "
          f"{'PASS' if speedup >= SPEEDUP_GOAL else 'MISS'}")
    return 0 if speedup >= SPEEDUP_GOAL and best <= LOSS_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
