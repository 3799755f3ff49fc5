"""Quality benchmark of the text models on tinyshakespeare (a script, not a test).

    .venv/bin/python bench/quality_text.py [gpt|gru ...] [--data PATH] [--device cpu|cuda] [--seed N]

gpt: nanoGPT's CPU recipe (char tokens, 4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3, no dropout,
2000 steps); nanoGPT reports val loss ~1.88. Target: val/loss <= 1.88.
gru: the article's network, CPU-sized (128-d embedding, 256 GRU units, block 100, batch 32, lr 3e-3),
1000 steps. Target: val/loss <= 2.0 within 4 minutes of wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from genq.core import api, checkpoint
from genq.core.data.text import load_text, tokenizer_from_state
from genq.core.recipes import gpt, gru

RUNS = {
    "gpt": ({"tokenizer": "char", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64,
             "batch_size": 12, "lr": 1e-3, "dropout": 0.0, "max_steps": 2000, "eval_interval": 250,
             "eval_iters": 20, "checkpoint_interval": 1000}, 1.88, None),
    "gru": ({"tokenizer": "char", "n_embd": 128, "hidden_size": 256, "block_size": 100, "batch_size": 32,
             "lr": 3e-3, "max_steps": 1000, "eval_interval": 250, "eval_iters": 20,
             "checkpoint_interval": 1000}, 2.0, 240.0),
}


class PrintHooks(api.Hooks):
    def __init__(self, target: float):
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self.target, self.reached_s = target, None  # wall time of the first evaluation at or under target

    def metrics(self, step, values):
        self.last.update(values)
        if "val/loss" in values:
            if self.reached_s is None and values["val/loss"] <= self.target:
                self.reached_s = time.perf_counter() - self.t0
            print(f"  step {step:5d}  val/loss {values['val/loss']:.4f}  "
                  f"train/loss {self.last.get('train/loss', float('nan')):.4f}  "
                  f"{self.last.get('throughput/tokens_per_s', 0):8.0f} tok/s  "
                  f"{time.perf_counter() - self.t0:6.1f}s", flush=True)


@torch.no_grad()
def full_val_loss(workdir: Path, data: api.DataSource, device: str) -> float:
    """Mean loss over every non-overlapping block of the 10% validation split (no sampling noise)."""
    ckpt = checkpoint.load_latest(workdir)
    spec = {"gpt": gpt.MODEL, "gru": gru.MODEL}[ckpt.kind]
    net = spec.build(ckpt.config).to(device).eval()
    ckpt.load_into({"model": net})
    ids = torch.tensor(tokenizer_from_state(ckpt.state["tokenizer"]).encode(load_text(data)))
    val = ids[int(0.9 * len(ids)):]
    t = ckpt.state["params"]["block_size"]
    n = (len(val) - 1) // t
    x, y = val[: n * t].view(n, t), val[1: n * t + 1].view(n, t)
    total = 0.0
    for i in range(0, n, 64):
        total += net(x[i:i + 64].to(device), y[i:i + 64].to(device))[1].item() * len(x[i:i + 64])
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["gpt", "gru"])
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = api.DataSource(kind="text", path=Path(args.data))
    rows = []
    for model in args.models:
        params, target, budget = RUNS[model]
        params = {**params, "seed": args.seed}
        print(f"{model}: {params}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            hooks = PrintHooks(target)
            t0 = time.perf_counter()
            result = api.train(model, params, data, Path(tmp), hooks, args.device)
            wall = time.perf_counter() - t0
            full = full_val_loss(Path(tmp), data, args.device)
        loss = result.metrics["val/loss"]
        reached = hooks.reached_s
        ok = loss <= target and (budget is None or (reached is not None and reached <= budget))
        rows.append((model, result.step, loss, full, wall, reached, target, budget, ok))
        print(f"  sample: {result.samples[0].text[:160]!r}")
    # val/loss: what the job reports (20 random batches, as nanoGPT's estimate); full: the whole val split;
    # reached_s: wall time when an evaluation first met the target (the budget applies to it)
    print("\nmodel  steps  val/loss  full_val  target  wall_s  reached_s  budget_s  ok")
    for model, steps, loss, full, wall, reached, target, budget, ok in rows:
        reached_txt = f"{reached:9.1f}" if reached is not None else "        -"
        print(f"{model:5s}  {steps:5d}  {loss:8.4f}  {full:8.4f}  {target:6.2f}  {wall:6.1f}  {reached_txt}  "
              f"{budget or '-':>8}  {ok}")


if __name__ == "__main__":
    main()
