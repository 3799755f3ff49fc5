"""The generic training loop."""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from genq.core import train as loop


def run(hooks, max_steps=25, start_step=0, losses=None, **kw):
    saved = []

    def save(step):
        saved.append(step)
        return Path(f"/ckpt/{step}")

    result = loop.run(losses or (lambda s: {"loss": torch.tensor(1.0 / (s + 1)), "loss_d": 2.0}), hooks,
                      max_steps=max_steps, start_step=start_step, save_fn=save, checkpoint_interval=10,
                      eval_fn=lambda s: {"val/loss": 0.5}, eval_interval=20, items_per_step=64, **kw)
    return result, saved


def test_logs_evaluates_and_checkpoints_on_schedule(make_hooks):
    hooks = make_hooks()
    result, saved = run(hooks)
    assert result.step == 25 and result.stopped is None and result.metrics == {"val/loss": 0.5}
    assert [s for s, _ in hooks.series["train/loss"]] == [10, 20, 25]
    assert hooks.series["train/loss"][0][1] == pytest.approx(sum(1 / (s + 1) for s in range(10)) / 10)
    assert [v for _, v in hooks.series["train/loss_d"]] == [2.0, 2.0, 2.0]
    assert all(v > 0 for _, v in hooks.series["throughput/tokens_per_s"])
    assert [s for s, _ in hooks.series["val/loss"]] == [20, 25]
    assert saved == [10, 20, 25] and [s for s, _ in hooks.checkpoints] == saved
    assert hooks.progress_calls[-1] == (25, 25)


def test_stop_request_saves_and_returns(make_hooks):
    hooks = make_hooks(stop_at=13, reason="shutdown")
    result, saved = run(hooks)
    assert (result.step, result.stopped) == (13, "shutdown")
    assert saved == [10, 13]


def test_steps_go_on_while_a_checkpoint_is_written_and_each_is_reported_once_written(make_hooks):
    hooks, steps, writes = make_hooks(), [], {}

    def save(step):  # a write that ends only when the test says so
        writes[step] = Future()
        return writes[step]

    def step_fn(s):
        steps.append(s)
        if s == 13:  # three steps after the save at 10: not reported before its write ends
            assert hooks.checkpoints == []
            writes[10].set_result(Path("/ckpt/10"))
        if s == 15:  # reported at the first step after it was written
            assert hooks.checkpoints == [(10, Path("/ckpt/10"))]
        if s == 21:
            writes[20].set_result(Path("/ckpt/20"))
        return {"loss": 1.0}

    def evaluate(s):  # the last checkpoint is being written meanwhile, and ends after the run's last step
        assert 25 in writes and not writes[25].done()
        threading.Timer(0.2, lambda: writes[25].set_result(Path("/ckpt/25"))).start()
        return {"val/loss": 0.5}

    result = loop.run(step_fn, hooks, max_steps=25, save_fn=save, checkpoint_interval=10, eval_fn=evaluate,
                      eval_interval=25)
    assert result.step == 25 and steps == list(range(25))
    assert hooks.checkpoints == [(10, Path("/ckpt/10")), (20, Path("/ckpt/20")), (25, Path("/ckpt/25"))]


def test_a_failed_checkpoint_write_fails_the_run(make_hooks):
    def save(step):
        write = Future()
        write.set_exception(OSError(28, "No space left on device"))
        return write

    with pytest.raises(OSError, match="No space left"):
        loop.run(lambda s: {"loss": 1.0}, make_hooks(), max_steps=25, save_fn=save, checkpoint_interval=10)


def test_resume_starts_at_the_saved_step_and_schedules_lr(make_hooks):
    hooks = make_hooks()
    seen = []
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    result, saved = run(hooks, start_step=20, losses=lambda s: seen.append(s) or {"loss": 1.0},
                        optimizers=[opt], lr_schedule=lambda s: loop.cosine_lr(s, 1.0, 0.1, 2, 25))
    assert seen == list(range(20, 25)) and saved == [25]
    assert opt.param_groups[0]["lr"] == pytest.approx(loop.cosine_lr(24, 1.0, 0.1, 2, 25))
    assert hooks.series["train/lr"][-1][1] == opt.param_groups[0]["lr"]


def test_cosine_schedule_shape():
    lrs = [loop.cosine_lr(s, 1.0, 0.1, 10, 100) for s in range(120)]
    assert lrs[0] < lrs[9] < 1.0 and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == lrs[119] == pytest.approx(0.1)


def test_diverged_loss_is_an_error(make_hooks):
    with pytest.raises(FloatingPointError, match="train/loss is not finite at step 10"):
        run(make_hooks(), losses=lambda s: {"loss": math.nan})


def test_resuming_a_finished_run_checkpoints_and_evaluates_without_training(make_hooks):
    hooks = make_hooks()
    steps = []
    result, saved = run(hooks, max_steps=25, start_step=25, losses=lambda s: steps.append(s) or {"loss": 1.0})
    assert steps == [] and result.step == 25 and result.stopped is None
    assert saved == [25] and result.metrics == {"val/loss": 0.5}
    assert hooks.series["val/loss"] == [(25, 0.5)]
