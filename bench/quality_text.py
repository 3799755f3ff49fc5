"""Quality benchmark of the text models on tinyshakespeare (a script, not a test).

    .venv/bin/python bench/quality_text.py [gpt|gru ...] [--data PATH] [--device cpu|cuda]

gpt: nanoGPT's CPU recipe (char tokens, 4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3, no dropout,
2000 steps); nanoGPT reports val loss ~1.88. Target: val/loss <= 1.88.
gru: the article's network at the recipe's defaults (256-d embedding, 512 GRU units, block 100, batch 64),
600 steps. Target: val/loss <= 2.0 within 4 minutes of wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from genq.core import api

RUNS = {
    "gpt": ({"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64,
             "batch_size": 12, "lr": 1e-3, "dropout": 0.0, "max_steps": 2000, "eval_interval": 250,
             "eval_iters": 20, "checkpoint_interval": 1000}, 1.88, None),
    "gru": ({"tokenizer": "char", "max_steps": 600, "eval_interval": 200, "eval_iters": 20,
             "checkpoint_interval": 1000}, 2.0, 240.0),
}


class PrintHooks(api.Hooks):
    def __init__(self):
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}

    def metrics(self, step, values):
        self.last.update(values)
        if "val/loss" in values:
            print(f"  step {step:5d}  val/loss {values['val/loss']:.4f}  "
                  f"train/loss {self.last.get('train/loss', float('nan')):.4f}  "
                  f"{self.last.get('throughput/tokens_per_s', 0):8.0f} tok/s  "
                  f"{time.perf_counter() - self.t0:6.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["gpt", "gru"])
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = api.DataSource(kind="text", path=Path(args.data))
    rows = []
    for model in args.models:
        params, target, budget = RUNS[model]
        print(f"{model}: {params}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            hooks = PrintHooks()
            t0 = time.perf_counter()
            result = api.train(model, params, data, Path(tmp), hooks, args.device)
            wall = time.perf_counter() - t0
        loss = result.metrics["val/loss"]
        ok = loss <= target and (budget is None or wall <= budget)
        rows.append((model, result.step, loss, wall, target, budget, ok))
        print(f"  sample: {result.samples[0].text[:160]!r}")
    print("\nmodel  steps  val/loss  target  wall_s  budget_s  ok")
    for model, steps, loss, wall, target, budget, ok in rows:
        print(f"{model:5s}  {steps:5d}  {loss:8.4f}  {target:6.2f}  {wall:6.1f}  {budget or '-':>8}  {ok}")


if __name__ == "__main__":
    main()
