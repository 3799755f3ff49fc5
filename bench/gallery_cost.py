"""What the gallery (Recipe.gallery, drawn after every evaluation) adds to a training job, per model kind.

Not part of the test suite. Each kind trains with its default params on its built-in dataset (gpt and gru
on pydoc); the script times a training step, an evaluation and the gallery drawn after it (at a few
evaluation steps, keeping the fastest), and prints the gallery's seconds next to the evaluation's and next
to a whole evaluation interval (eval_interval steps plus the evaluation).

    .venv/bin/python bench/gallery_cost.py                  # all five kinds on the CPU, one thread
    .venv/bin/python bench/gallery_cost.py gpt --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from genq.core import spec
from genq.core.api import DataSource, Hooks
from genq.core.recipe import gallery_folder

DATA = {"text": "pydoc", "images": "digits", "audio": "tones"}


def seconds(device: str, fn: Callable[..., object], *args: object) -> float:
    """Wall seconds of fn(*args), waiting for the device's queued work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(kind: str, device: str, steps: int, evaluations: int, workdir: Path) -> dict[str, float]:
    """{step, evaluation, gallery, interval} seconds for `kind` with its default params."""
    model = spec.get(kind)
    p = model.train_params({})
    r = model.load_recipe()(p, device, Hooks())
    torch.manual_seed(p["seed"])
    r.build(DataSource(kind=model.data, builtin=DATA[model.data]), None)
    r.prepare(0)
    r.step(0)  # warm-up
    step = seconds(device, lambda: [r.step(i) for i in range(1, steps + 1)]) / steps
    evaluation, gallery = [], []
    for i in range(1, evaluations + 1):  # distinct steps, as in training (wavenet keeps one evaluation's clips)
        at = i * p["eval_interval"]
        evaluation.append(seconds(device, r.evaluate, at))
        gallery.append(seconds(device, r.gallery, at, gallery_folder(workdir / kind, at)))
    return {"step": step, "evaluation": min(evaluation), "gallery": min(gallery),
            "interval": p["eval_interval"] * step + min(evaluation), "eval_interval": p["eval_interval"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kinds", nargs="*", default=list(spec.registry()))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--evaluations", type=int, default=3, help="evaluations (and galleries) timed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'kind':8} {'step s':>8} {'eval s':>8} {'gallery s':>10} {'/eval':>7} {'/interval':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            m = measure(kind, args.device, args.steps, args.evaluations, Path(tmp))
            print(f"{kind:8} {m['step']:8.4f} {m['evaluation']:8.3f} {m['gallery']:10.4f} "
                  f"{m['gallery'] / m['evaluation']:7.1%} {m['gallery'] / m['interval']:10.2%}"
                  f"   (interval: {m['eval_interval']} steps + evaluation = {m['interval']:.1f} s)")


if __name__ == "__main__":
    main()
