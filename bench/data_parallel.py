"""Data-parallel training on this machine's CPU (a script, not a test): the same gpt job as one process and as
two gloo ranks (genq.core.parallel), in the same run, alternating, each process on one thread (a 2-slot CPU
worker's share of 2 cores).

    .venv/bin/python bench/data_parallel.py --corpus PATH [--steps N] [--rounds N]

Prints, for each, the train/loss at every log step and the final val/loss (the two should agree to float32
rounding: the ranks take halves of the same global batch and average their gradients), and the median
seconds per step (the loop's own throughput metric, so start-up and evaluation are left out) with the
ratio 1 process / 2 ranks (2.0 would be perfect scaling on two idle cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from genq.worker.process import SPIN_COUNT  # noqa: E402 - imports no torch

os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)  # the worker's setting (genq.worker.process)

import torch  # noqa: E402

from genq.core import api  # noqa: E402

PARAMS = {"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 16,
          "dropout": 0.0, "lr": 1e-3, "eval_iters": 4, "warmup_steps": 10}


class Recorder(api.Hooks):
    def __init__(self):
        self.losses: dict[int, float] = {}
        self.rates: list[float] = []
        self.val: float | None = None

    def metrics(self, step, values):
        if "train/loss" in values:
            self.losses[step] = values["train/loss"]
            self.rates.append(values["throughput/tokens_per_s"])
        if "val/loss" in values:
            self.val = values["val/loss"]


def run(corpus: Path, steps: int, world: int) -> Recorder:
    hooks = Recorder()
    params = {**PARAMS, "max_steps": steps, "eval_interval": steps, "checkpoint_interval": steps}
    with tempfile.TemporaryDirectory() as work:
        api.train("gpt", params, api.DataSource(kind="text", path=corpus), Path(work), hooks, world=world)
    return hooks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for world in (1, 2) if round_ % 2 == 0 else (2, 1):
            got = run(args.corpus, args.steps, world)
            rates[world] += got.rates
            print(f"round {round_} world {world}: train/loss " +
                  ", ".join(f"{s}: {v:.5f}" for s, v in sorted(got.losses.items())) + f"; val/loss {got.val:.5f}")
    one, two = (statistics.median(rates[w]) for w in (1, 2))
    print(f"tokens/s (median of log intervals): 1 process {one:.0f}, 2 ranks {two:.0f}; ratio 2 ranks / 1 process "
          f"{two / one:.2f}")
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
