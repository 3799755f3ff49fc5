"""Every model kind's CUDA path on a real GPU, through genq.core.api as a worker calls it: a small model of each
kind trains on the GPU, is stopped after a checkpoint, resumes from it and finishes, then generates; the text
kinds' batch generation (gpt, gru) gives the same rows at batch sizes 1, 7 and 32 (gpt's on a GPU also without
CUDA graphs). bench/gpu_check.sh runs it after gpu_check.py (under a minute); alone: `python
bench/gpu_models.py [--device cuda] [--kinds gpt,gru]`. Nothing is downloaded: the data are genq's built-in
datasets and a tiny GPT-2 built here (tests/hf_tiny.py). Exits 1 if any kind fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from genq.core import api, base_models
from genq.core.data.prompts import PromptRow
from genq.core.models.gpt import slots

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # hf_tiny builds the hf-causal-lm base

TEXT = api.DataSource(kind="text", builtin="pydoc")
STEPS = {"max_steps": 40, "eval_interval": 20, "checkpoint_interval": 20}
KINDS = {  # kind: (params, data, prompts to generate from)
    "gpt": ({"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "batch_size": 16, "lr": 3e-3,
             "eval_iters": 2, "warmup_steps": 5}, TEXT, ["def ", None]),
    "gru": ({"n_embd": 32, "hidden_size": 64, "block_size": 64, "batch_size": 16, "lr": 1e-2, "eval_iters": 2},
            TEXT, ["def ", None]),
    "dcgan": ({"base_channels": 8, "z_dim": 8, "batch_size": 16, "image_size": 8, "conditional": "prompt"},
              api.DataSource(kind="images", builtin="digits"), ["seven", None]),
    "vae": ({"base_channels": 8, "z_dim": 4, "batch_size": 16, "image_size": 8},
            api.DataSource(kind="images", builtin="digits"), [None]),
    "wavenet": ({"n_layers": 4, "residual_channels": 8, "segment_length": 128, "batch_size": 4,
                 "conditional": True}, api.DataSource(kind="audio", builtin="tones"), ["A4", None]),
    "hf-causal-lm": ({"base": "tiny", "block_size": 32, "batch_size": 8, "lr": 3e-3, "eval_iters": 2,
                      "warmup_steps": 5}, TEXT, ["def ", None]),
}


class Hooks(api.Hooks):
    """Keeps the metrics and checkpoints; asks to stop once `stop_at` steps have run."""

    def __init__(self, stop_at: int | None = None):
        self.series: dict[str, list[float]] = {}
        self.checkpoints: list[int] = []
        self.stop_at, self.asked = stop_at, 0

    def metrics(self, step, values):
        for name, value in values.items():
            self.series.setdefault(name, []).append(value)

    def checkpoint(self, step, path):
        self.checkpoints.append(step)

    def stop_requested(self):
        self.asked += 1
        return "cancel" if self.stop_at is not None and self.asked > self.stop_at else None


def check_kind(kind: str, workdir: Path, device: str) -> str:
    """Train, stop, resume, generate (and generate rows); a one-line summary, or an AssertionError."""
    params, data, prompts = KINDS[kind]
    params = {**params, **STEPS}
    first = Hooks(stop_at=25)
    stopped = api.train(kind, params, data, workdir, first, device=device)
    assert stopped.stopped == "cancel" and first.checkpoints[-1] == stopped.step, (stopped, first.checkpoints)
    second = Hooks()
    done = api.train(kind, params, data, workdir, second, device=device)
    assert done.step == params["max_steps"] and done.stopped is None, done
    losses = [v for name, values in {**first.series, **second.series}.items() if name.endswith("loss")
              for v in values]
    assert losses and all(math.isfinite(v) for v in losses), f"a loss is not finite: {losses}"
    peak = second.series.get("memory/peak_bytes", [0])[-1]
    assert peak > 0, "no memory/peak_bytes reported"
    samples = api.generate(workdir, prompts, {"num_samples": 2, "max_new_tokens": 16, "seed": 3},
                           workdir.parent / f"{kind}-out", api.Hooks(), device=device)
    assert len(samples) == 2 * len(prompts) and all(s.text or (s.path and s.path.stat().st_size) for s in samples)
    line = (f"stopped at {stopped.step}, resumed to {done.step}; {len(samples)} samples; "
            f"peak {peak / 2**20:.0f} MiB; {', '.join(f'{k} {v:.3g}' for k, v in sorted(done.metrics.items())[:2])}")
    if "throughput/mfu" in second.series:
        line += f"; MFU {100 * second.series['throughput/mfu'][-1]:.2f}%"
    if api.generates_rows(kind):
        line += "; " + check_rows(workdir, device, graphs=kind == "gpt")
    return line


def check_rows(workdir: Path, device: str, graphs: bool) -> str:
    """Batch generation on the device: the same rows, byte for byte, at batch sizes 1, 7 and 32, and, for a
    model whose engine replays CUDA graphs on a GPU (`graphs`), without them."""
    rows = [PromptRow(i, "def " * (i % 5), f"r{i}", {"max_new_tokens": 4 + i % 29}) for i in range(40)]

    def texts(batch_size: int) -> list[tuple]:
        seen: list[api.RowResult] = []
        hooks = api.Hooks()
        hooks.rows = seen.extend
        api.generate_rows(workdir, rows, {"num_samples": 2, "seed": 4, "batch_size": batch_size}, hooks, device)
        return sorted((r.index, r.text, r.error) for r in seen)

    by_batch = {batch_size: texts(batch_size) for batch_size in (1, 7, 32)}
    assert len(by_batch[1]) == 80 and all(t[1] for t in by_batch[1]), "rows missing or empty"
    differing = [b for b in (7, 32) if by_batch[b] != by_batch[1]]
    assert not differing, f"rows at batch sizes {differing} differ from batch size 1"
    if not (graphs and device.startswith("cuda")):
        return "80 rows identical at batch sizes 1, 7, 32"
    with slots.cuda_graphs(False):
        eager = texts(32)
    same = sum(a == b for a, b in zip(eager, by_batch[32], strict=True))
    assert same == len(eager), f"{len(eager) - same} of {len(eager)} rows differ without CUDA graphs"
    return "80 rows identical at batch sizes 1, 7, 32 and without CUDA graphs"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated model kinds")
    args = ap.parse_args(argv)
    kinds, failed = args.kinds.split(","), []
    with tempfile.TemporaryDirectory() as tmp:
        from hf_tiny import build_tiny_gpt2

        build_tiny_gpt2(Path(tmp) / "models" / "tiny")
        base_models.configure(Path(tmp) / "models")
        print(f"model kinds on {args.device} ({torch.cuda.get_device_name() if 'cuda' in args.device else 'CPU'}, "
              f"torch {torch.__version__})", flush=True)
        for kind in kinds:
            began = time.perf_counter()
            try:
                line = check_kind(kind, Path(tmp) / kind, args.device)
                print(f"  ok    {kind:13} {time.perf_counter() - began:5.1f} s  {line}", flush=True)
            except Exception as exc:  # noqa: BLE001 - every kind is checked; each failure is printed whole
                failed.append(kind)
                print(f"  FAIL  {kind:13} {time.perf_counter() - began:5.1f} s  {type(exc).__name__}: {exc}")
                traceback.print_exc()
    print(f"{len(kinds) - len(failed)} of {len(kinds)} model kinds passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
