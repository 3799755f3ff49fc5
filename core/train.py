"""A generic training loop (minGPT-trainer style): the recipe supplies the step, the loop does the rest.

The recipe owns the model, optimizer and data; the loop owns the schedule of side effects:
learning rate, metric logging, evaluation, checkpoints, progress, and cooperative stop requests.

Usage::

    from genq.core import device, train as loop

    def step_fn(step: int) -> dict[str, torch.Tensor | float]:
        x, y = data.get_batch("train")
        _, loss = net(x, y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return {"loss": loss.detach()}          # tensors are fine: .item() happens only at log steps

    def eval_fn(step: int) -> dict[str, float]:
        return {"val/loss": ..., "val/perplexity": ...}

    def save_fn(step: int) -> Path:             # write a checkpoint for `step` completed steps
        return checkpoint.save(workdir, step, {"model": net}, {...})
        # or, to train on while it is written: writer.submit(checkpoint.write, workdir, checkpoint.snapshot(...))

    result = loop.run(step_fn, hooks, max_steps=p["max_steps"], start_step=ckpt.step if ckpt else 0,
                      save_fn=save_fn, checkpoint_interval=p["checkpoint_interval"],
                      eval_fn=eval_fn, eval_interval=p["eval_interval"],
                      optimizers=[opt], lr_schedule=lambda s: loop.cosine_lr(s, 1e-3, 1e-4, 100, 2000),
                      items_per_step=batch_size * block_size, throughput_metric="throughput/tokens_per_s",
                      flops_per_item=net.flops_per_token(), peak_flops=device.peak_flops("cuda"),
                      peak_memory=device.PeakMemory("cuda").bytes)
    # result: api.TrainResult(step, stopped=None|"cancel"|"shutdown", metrics=<last eval>)

Steps count completed optimisation steps: step_fn(s) runs step s (0-based) and afterwards `s + 1` steps are
done; metrics, evaluations and checkpoints are labelled with that count. Loss keys become metric names:
"loss" -> "train/loss", "loss_d" -> "train/loss_d", a key containing "/" is used as is. Train losses are
averaged over the log interval. Each log step also records the throughput (items per second of step time),
"throughput/mfu" (model FLOPs utilisation: items/s x flops_per_item / peak_flops) when both are given, and
"memory/peak_bytes" when peak_memory() gives a number. Every step starts with hooks.stop_requested(): on
"cancel"/"shutdown" the loop saves a checkpoint (unless one exists for this step) and returns
TrainResult(stopped=reason).
A save_fn that returns a Future (the checkpoint written in another thread) lets training go on meanwhile: the
loop calls hooks.checkpoint once the write is done (checked at each step), waits for it before the next
checkpoint, and before it returns. A checkpoint due at an evaluation step is started before the evaluation.
A non-finite train loss raises FloatingPointError naming the step (lower the learning rate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import torch

from genq.core.api import Hooks, TrainResult

LossDict = dict[str, "torch.Tensor | float"]


def cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """nanoGPT's schedule: linear warmup to `lr`, cosine decay to `min_lr` at `decay_steps`, then flat."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    ratio = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def metric_name(key: str) -> str:
    """'loss' -> 'train/loss'; keys with a '/' are already metric names."""
    return key if "/" in key else f"train/{key}"


def run(step_fn: Callable[[int], LossDict], hooks: Hooks, *, max_steps: int,
        save_fn: Callable[[int], Path | Future[Path]],
        checkpoint_interval: int, start_step: int = 0,
        eval_fn: Callable[[int], dict[str, float]] | None = None, eval_interval: int = 0,
        optimizers: Sequence[torch.optim.Optimizer] = (),
        lr_schedule: Callable[[int], float] | None = None, log_interval: int = 10, items_per_step: int = 0,
        throughput_metric: str = "throughput/tokens_per_s", flops_per_item: float | None = None,
        peak_flops: float | None = None, peak_memory: Callable[[], int | None] | None = None) -> TrainResult:
    """Run steps start_step..max_steps-1 with logging, evaluation, checkpoints and stop checks."""
    step = start_step
    saved_at: int | None = None
    writing: tuple[int, Future[Path]] | None = None  # a checkpoint still being written: (its step, the write)
    last_eval: dict[str, float] = {}
    sums: dict[str, torch.Tensor | float] = {}
    n_summed = 0
    t_mark, busy = time.perf_counter(), 0.0  # busy: eval/checkpoint time, left out of throughput

    def written(wait: bool) -> None:
        """Report the checkpoint being written once it is (with `wait`, wait for it); raise what its write raised."""
        nonlocal writing
        if writing is not None and (wait or writing[1].done()):
            (at, write), writing = writing, None
            hooks.checkpoint(at, write.result())

    def checkpoint() -> None:
        nonlocal saved_at, writing
        if saved_at != step:
            written(wait=True)  # one write at a time
            out = save_fn(step)
            saved_at = step
            if isinstance(out, Future):
                writing = (step, out)
            else:
                hooks.checkpoint(step, out)

    hooks.progress(step, max_steps)
    while step < max_steps:
        written(wait=False)
        reason = hooks.stop_requested()
        if reason:
            hooks.log(f"stop requested ({reason}) at step {step}: saving a checkpoint")
            checkpoint()
            written(wait=True)
            return TrainResult(step=step, stopped=reason, metrics=last_eval)

        lr = None
        if lr_schedule is not None:
            lr = lr_schedule(step)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
        losses = step_fn(step)
        step += 1
        for key, value in losses.items():  # summed on the device: no sync until the log step
            v = value.detach() if isinstance(value, torch.Tensor) else value
            sums[key] = sums[key] + v if key in sums else v
        n_summed += 1

        if step % log_interval == 0 or step == max_steps:
            values = {metric_name(k): float(v) / n_summed for k, v in sums.items()}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"{', '.join(bad)} is not finite at step {step}: "
                                         "training diverged (try a lower lr)")
            now = time.perf_counter()
            if items_per_step:
                rate = items_per_step * n_summed / max(1e-9, now - t_mark - busy)
                values[throughput_metric] = rate
                if flops_per_item and peak_flops:
                    values["throughput/mfu"] = rate * flops_per_item / peak_flops
            if peak_memory is not None and (peak := peak_memory()) is not None:
                values["memory/peak_bytes"] = peak
            if lr is not None:
                values["train/lr"] = lr
            hooks.metrics(step, values)
            hooks.progress(step, max_steps)
            sums, n_summed, t_mark, busy = {}, 0, now, 0.0

        t0 = time.perf_counter()
        if step % checkpoint_interval == 0 or step == max_steps:
            checkpoint()  # first: an evaluation at the same step runs while it is written
        if eval_fn is not None and eval_interval and (step % eval_interval == 0 or step == max_steps):
            last_eval = dict(eval_fn(step))
            if last_eval:
                hooks.metrics(step, last_eval)
                hooks.log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
        busy += time.perf_counter() - t0

    if saved_at != step:  # resumed a finished job: make sure its final checkpoint exists
        checkpoint()
    written(wait=True)
    if eval_fn is not None and not last_eval:  # resumed a finished job: its final evaluation is redone
        last_eval = dict(eval_fn(step))
        hooks.metrics(step, last_eval)
    hooks.progress(step, max_steps)
    return TrainResult(step=step, metrics=last_eval)
