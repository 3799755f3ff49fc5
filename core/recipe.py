"""One resumable training skeleton for every model kind: build -> restore -> loop -> finish.

A model kind subclasses `Recipe` and supplies only what is its own: how it builds its networks and
optimizers from the params and the data (or from the checkpoint being resumed), one optimisation step, one
evaluation, the gallery of samples drawn after each evaluation, the extra state its checkpoints carry (data
position, tokenizer, class names), its final samples, and how it generates from a trained checkpoint. `fit`
does the rest, the same way for all of them: validate the params, find the newest checkpoint, seed, build,
restore weights/optimizers/RNG/extra state, run the loop (genq.core.train) with its evaluations (each
followed by the gallery, handed to hooks.samples) and checkpoints (written and handed to
hooks.checkpoint_written in a thread of their own while training goes on), and finish with the samples unless the
job was asked to stop. Along the way it records memory/peak_bytes (genq.core.device.PeakMemory) at every log
step and once more at the end, and throughput/mfu on a GPU of known peak for a recipe whose flops_per_item()
is not None.

A kind whose params have `ema_decay` (gpt, gru) is evaluated, sampled and checkpointed as the moving average of its
weights (genq.core.ema) while it trains on the weights themselves.

A checkpoint holds the modules' weights (safetensors; the average, where the kind averages) and, in its state,
"kind", "config", "params", "rng", each optimizer's state under its name in `optimizers`, the trained weights
where the kind averages, and whatever `extra_state()` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genq.core import checkpoint, ema, model_cache, spec
from genq.core import device as dev
from genq.core import train as loop
from genq.core.api import DataSource, Hooks, Sample, TrainResult
from genq.core.parallel import Gang
from genq.core.train import LossDict

GALLERY_SEED = 3  # added to the job's seed for the gallery's generators (evaluation and final samples use others)


def size(*modules: nn.Module) -> str:
    """The parameter count of `modules` for a log line: "0.80M parameters"."""
    return f"{sum(p.numel() for m in modules for p in m.parameters()) / 1e6:.2f}M parameters"


class Recipe:
    """How one model kind trains. Subclasses set `kind` and fill `config`, `modules` and `optimizers` in
    `build`; the rest has defaults a simple model keeps."""

    kind: str
    throughput_metric = "throughput/samples_per_s"

    def __init__(self, p: dict[str, Any], device: str, hooks: Hooks):
        self.p, self.device, self.hooks = p, device, hooks
        self.config: dict[str, Any] = {}  # what rebuilds the networks; saved in every checkpoint
        self.modules: dict[str, nn.Module] = {}  # checkpointed by name
        self.optimizers: dict[str, torch.optim.Optimizer] = {}  # checkpointed by name
        self.gang: Gang | None = None  # set by parallel(): this process is one rank of a data-parallel run

    def build(self, data: DataSource, resumed: checkpoint.Checkpoint | None) -> None:
        """Load the data and build config, modules and optimizers (from `resumed.config` when resuming)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The first log line of a new job (the size is added)."""
        return self.kind

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint carries besides weights, optimizers and RNG (the data position, say)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what extra_state() saved."""

    def prepare(self, start: int) -> None:
        """After build and restore, before the first step (fit evaluation helpers, say)."""

    def parallel(self, gang: Gang) -> None:
        """Train as one rank of `gang` (kinds whose spec says data_parallel): gradients averaged over the
        ranks, each rank taking gang.share() of every batch."""
        raise NotImplementedError(f"model '{self.kind}' does not train data-parallel")

    def step(self, step: int) -> LossDict:
        """One optimisation step; the losses to log (tensors are fine)."""
        raise NotImplementedError

    def evaluate(self, step: int) -> dict[str, float]:
        """Metrics at an evaluation step; `step == p["max_steps"]` is the final one."""
        return {}

    def gallery(self, step: int, folder: Path) -> list[Sample]:
        """A few samples after the evaluation at `step`, files written under `folder`. It runs at every
        evaluation, so it must be cheap, and draw from generators of its own with a fixed seed: the same
        latents at every step (so steps compare), and training's random streams untouched."""
        return []

    def lr_schedule(self) -> Callable[[int], float] | None:
        """step -> learning rate for every optimizer, or None for a fixed one."""
        return None

    def items_per_step(self) -> int:
        """What the throughput metric counts per step (samples; tokens for text)."""
        return self.p["batch_size"]

    def flops_per_item(self) -> float | None:
        """Training FLOPs per item that items_per_step counts, for throughput/mfu on a GPU; None: no MFU."""
        return None

    def finish(self, result: TrainResult, folder: Path) -> list[Sample]:
        """The final samples, written under `folder`; may add to result.metrics."""
        return []

    @classmethod
    def generate(cls, source_workdir: Path, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                 hooks: Hooks, device: str) -> list[Sample]:
        """num_samples samples per prompt from the model trained in `source_workdir`, written under `out_dir`."""
        raise NotImplementedError

    @classmethod
    def generate_from_base(cls, base: str, prompts: list[str | None], params: dict[str, Any], out_dir: Path,
                           hooks: Hooks, device: str) -> list[Sample]:
        """num_samples samples per prompt from pretrained model `base` of the models folder (a kind whose spec
        says pretrained=True)."""
        raise NotImplementedError

    @classmethod
    def generation_model(cls, ckpt: checkpoint.Checkpoint, device: str) -> Any:
        """What generate() needs of a trained checkpoint (networks on `device` in eval mode, a tokenizer).
        genq.core.model_cache keeps it between jobs: generating must not change it."""
        raise NotImplementedError

    @classmethod
    def loaded(cls, source_workdir: Path, device: str) -> Any:
        """generation_model() of the newest checkpoint in `source_workdir`, from the model cache when it is there."""
        return model_cache.get(source_workdir, cls.kind, device, cls.generation_model)


def gallery_folder(workdir: Path, step: int) -> Path:
    """Where the gallery of `step` is written: workdir/samples/step-XXXXXXXX/."""
    return workdir / "samples" / f"step-{step:08d}"


def fit(recipe: type[Recipe], params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks,
        device: str, gang: Gang | None = None) -> TrainResult:
    """Train (or resume from the newest checkpoint in `workdir`) the model kind of `recipe`; with `gang`, as
    one rank of a data-parallel run (genq.core.parallel), where rank 0 alone evaluates, saves and samples."""
    p = spec.get(recipe.kind).train_params(params)
    if gang is not None:
        hooks = gang.hooks(hooks)
    memory = dev.PeakMemory(device)  # before the data and the model: the whole job counts
    resumed = checkpoint.load_latest(workdir, recipe.kind)
    r = recipe(p, device, hooks)
    torch.manual_seed(p["seed"])
    r.build(data, resumed)
    start = 0
    if resumed is not None:
        start = resumed.restore(r.modules, r.optimizers)
        r.load_extra_state(resumed.state)
        hooks.log(f"resumed from the checkpoint at step {start}")
        before = resumed.state.get("params", {})
        if changed := [f"{k} {p[k]!r} (was {before[k]!r})" for k in p if k in before and before[k] != p[k]]:
            hooks.log(f"params changed since the run began: {', '.join(changed)}; the network, its tokenizer and "
                      "its optimizer stay the checkpoint's")
    else:
        hooks.log(f"{r.describe()}, {size(*r.modules.values())}")
    # what evaluations, samples and checkpoints show: the trained weights' average, for a kind with ema_decay
    average = ema.start(r.modules.values(), r.p.get("ema_decay", 0.0), resumed and resumed.state)
    shown = average.swapped_in if average else nullcontext
    r.prepare(start)
    if gang is not None:
        r.parallel(gang)
    lead = gang is None or gang.lead
    flops = r.flops_per_item()

    # Checkpoints are written in a thread of their own: at the step the weights are copied to the CPU and the
    # state serialized, and training goes on while the files are written, fsynced and uploaded
    # (hooks.checkpoint_written): seconds for a large model (bench/checkpoint_stall.py). At the lowest priority
    # (genq.core.device.background_thread): the end of the run, or the next checkpoint, waits for it if need be.
    writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint", initializer=dev.background_thread)

    def write(snap: checkpoint.Snapshot) -> Path:
        path = checkpoint.write(workdir, snap)
        hooks.checkpoint_written(snap.step, path)
        return path

    def save(step: int) -> Future[Path]:
        state = {"kind": r.kind, "config": r.config, "params": p, "rng": checkpoint.rng_state(),
                 **{name: opt.state_dict() for name, opt in r.optimizers.items()}, **r.extra_state()}
        with shown() as trained:
            if average:
                state[ema.STATE_KEY] = trained
            return writer.submit(write, checkpoint.snapshot(step, r.modules, state))

    def evaluate(step: int) -> dict[str, float]:
        with shown():
            metrics = r.evaluate(step)
            drawn = r.gallery(step, gallery_folder(workdir, step))
        if drawn:
            hooks.samples(step, drawn)
        return metrics

    def step(s: int) -> LossDict:
        losses = r.step(s)
        average.update(s)
        return losses

    with writer:  # a write still going when the loop raises is waited for
        train_step = step if average else r.step
        result = loop.run(train_step if gang is None else gang.averaged(train_step), hooks, max_steps=p["max_steps"],
                          start_step=start, save_fn=save if lead else lambda step: workdir,
                          checkpoint_interval=p["checkpoint_interval"], eval_fn=evaluate if lead else None,
                          eval_interval=p["eval_interval"], optimizers=list(r.optimizers.values()),
                          lr_schedule=r.lr_schedule(), items_per_step=r.items_per_step(),
                          throughput_metric=r.throughput_metric, flops_per_item=flops,
                          peak_flops=dev.peak_flops(device) if flops else None, peak_memory=memory.bytes)
    if not result.stopped and lead:
        with shown():
            result.samples = r.finish(result, workdir / "samples")
    if (peak := memory.bytes()) is not None:  # the final evaluation and samples included
        hooks.metrics(result.step, {"memory/peak_bytes": peak})
    return result
