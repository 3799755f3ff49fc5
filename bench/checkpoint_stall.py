"""What checkpoints cost a training run (a script, not a test): genq's checkpoints written in a thread of their
own against the same checkpoints written in the training thread, side by side in one run.

    .venv/bin/python bench/checkpoint_stall.py [--shape 12,12,768] [--batch 2] [--steps 8] [--every 2] [--rounds 3]

A `gpt` of the given shape (layers, heads, width; block 256, Muon; the default is GPT-2 small's blocks: 85M
parameters, a 680 MB checkpoint with its optimizer state; a small batch, so that the steps' own noise does
not hide the checkpoints') trains in this process through
genq.core.recipe.fit for --steps steps, checkpointing every --every, on a synthetic text. The peer is the same
fit with the checkpoint's write (the weights' serialization, the files, fsyncs, rename) and its upload (to a
folder store with a content cache, as a job's) run in the training thread, as genq did before; the snapshot
taken at the step (the weights copied, the state serialized) is the same on both sides. Rounds alternate the
two and a run with no checkpoint but the last; printed: each run's seconds, the medians, and what a checkpoint
added to a run on each side. With the worker's OpenMP setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from genq.worker.process import SPIN_COUNT  # noqa: E402 - imports no torch

os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)  # as a CPU worker runs its jobs, before torch starts threads

import torch  # noqa: E402

from genq.core import api  # noqa: E402
from genq.core import recipe as recipes  # noqa: E402
from genq.core.models.gpt.recipe import GPTRecipe  # noqa: E402
from genq.store import LocalStore  # noqa: E402
from genq.worker.artifacts import ContentCache, JobFiles  # noqa: E402


class Uploading(api.Hooks):
    """Hooks that upload each checkpoint to a folder store with a content cache, as a job's do
    (genq.worker.hooks.JobHooks.checkpoint_written), and record nothing."""

    def __init__(self, workdir: Path, store: Path):
        self.files = JobFiles(LocalStore(store), workdir, "jobs/1/a1", ContentCache(store.parent / "cache", 1 << 40))

    def checkpoint_written(self, step: int, path: Path) -> None:
        self.files.upload_checkpoint(path)


class InThread:
    """A stand-in for the recipe's writer thread that writes at once, in the caller's thread (the peer)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def corpus(folder: Path) -> Path:
    """200k characters drawn from 65 (seeded): a char vocabulary like tinyshakespeare's."""
    gen = torch.Generator().manual_seed(0)
    path = folder / "corpus.txt"
    path.write_text("".join(chr(32 + i) for i in torch.randint(65, (200_000,), generator=gen).tolist()))
    return path


def run(text: Path, shape: tuple[int, int, int], batch: int, steps: int, every: int, writes: str) -> float:
    """Seconds of one fit: `writes` is "thread" (genq's), "inline" (the peer) or "none" (no checkpoint due)."""
    layers, heads, width = shape
    params = {"tokenizer": "char", "n_layer": layers, "n_head": heads, "n_embd": width, "block_size": 256,
              "batch_size": batch, "max_steps": steps, "eval_interval": steps, "eval_iters": 2,
              "checkpoint_interval": every if writes != "none" else 10 * steps}
    original = recipes.ThreadPoolExecutor
    recipes.ThreadPoolExecutor = InThread if writes == "inline" else original
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir, hooks = Path(tmp) / "work", Uploading(Path(tmp) / "work", Path(tmp) / "store")
            start = time.perf_counter()
            recipes.fit(GPTRecipe, params, api.DataSource(kind="text", path=text), workdir, hooks, "cpu")
            return time.perf_counter() - start
    finally:
        recipes.ThreadPoolExecutor = original


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="12,12,768", help="layers,heads,width")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    times: dict[str, list[float]] = {"thread": [], "inline": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        text = corpus(Path(tmp))
        run(text, shape, args.batch, 2, 1, "thread")  # warm up: imports, first kernels
        for _ in range(args.rounds):
            for writes in times:
                times[writes].append(run(text, shape, args.batch, args.steps, args.every, writes))
    saves = args.steps // args.every  # the last one at max_steps is among them
    base = statistics.median(times["none"])
    print(f"gpt {shape}, batch {args.batch}, {args.steps} steps, a checkpoint every {args.every} ({saves}, the last "
          f"at the end; the run without them saves only the last), {args.rounds} rounds, torch {torch.__version__}:")
    for writes, label in (("thread", "written in a thread (genq)"), ("inline", "written in the training thread"),
                          ("none", "no checkpoint but the last")):
        runs = " ".join(f"{t:.2f}" for t in times[writes])
        print(f"  {label:32} {runs} s, median {statistics.median(times[writes]):.2f}")
    for writes in ("thread", "inline"):
        extra = (statistics.median(times[writes]) - base) / (saves - 1)
        print(f"  a checkpoint {writes:6} adds {extra * 1000:.0f} ms to the run")
    ratio = statistics.median(times["inline"]) / statistics.median(times["thread"])
    print(f"  run time, in the training thread / in a thread: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
