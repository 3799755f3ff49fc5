"""Data-parallel training (genq.core.parallel): 2 gloo ranks on this CPU train what one process trains, stop
together at rank 0's request, and end when a rank dies, leaving no process behind."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import torch

from genq.core import api, checkpoint
from genq.core import device as dev
from genq.core.parallel import RankLost

# Dropout 0: a dropout mask is drawn per rank, so with dropout the ranks would not replay one process' run.
PARAMS = {"tokenizer": "char", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 8,
          "dropout": 0.0, "eval_iters": 1, "max_steps": 20, "eval_interval": 10, "checkpoint_interval": 10,
          "warmup_steps": 2}


GRU = {"tokenizer": "char", "n_embd": 16, "hidden_size": 16, "block_size": 16, "batch_size": 8, "eval_iters": 1,
       "max_steps": 20, "eval_interval": 10, "checkpoint_interval": 10}


@pytest.mark.parametrize("model,params", [("gpt", PARAMS), ("gru", GRU)])
def test_two_ranks_train_what_one_process_trains(model, params, tmp_path, text_file, make_hooks, cpu_kind):
    cpu_kind(False)  # float32 (gpt trains in bf16 on a CPU with bf16 units: the bf16 test below)
    one, two = make_hooks(), make_hooks()
    api.train(model, params, text_file, tmp_path / "one", one)
    result = api.train(model, params, text_file, tmp_path / "two", two, world=2)
    assert result.step == 20 and result.samples, "rank 0 finishes with the final samples"
    losses_one, losses_two = dict(one.series["train/loss"]), dict(two.series["train/loss"])
    assert losses_one.keys() == losses_two.keys()
    # Same global batch, gradients averaged over two half batches: equal up to float32 rounding of the sums.
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-4), f"train/loss at step {step}"
    assert [s for s, _ in two.checkpoints] == [10, 20], "rank 0 alone saves, at the same steps"
    a, b = (checkpoint.load_latest(tmp_path / name).tensors["model"] for name in ("one", "two"))
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-4, atol=1e-5, msg=f"weight {name}")
    assert not multiprocessing.active_children(), "the other rank exited"


def test_two_ranks_train_what_one_process_trains_in_bf16_too(tmp_path, text_file, make_hooks, cpu_kind):
    cpu_kind(True)  # bf16 autocast (emulated where the CPU has no bf16 units): half batches round differently
    params = {**PARAMS, "n_embd": dev.CPU_BF16_MIN_WIDTH}  # as narrow as bf16 autocast goes (in spawned ranks too)
    one, two = make_hooks(), make_hooks()
    api.train("gpt", params, text_file, tmp_path / "one", one)
    api.train("gpt", params, text_file, tmp_path / "two", two, world=2)
    losses_one, losses_two = dict(one.series["train/loss"]), dict(two.series["train/loss"])
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-4), f"train/loss at step {step}"
    a, b = (checkpoint.load_latest(tmp_path / name).tensors["model"] for name in ("one", "two"))
    for name, tensor in a.items():  # seen: 1.1e-2 of the largest weight after 20 steps; bf16 keeps 8 bits (4e-3)
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=2e-2 * float(tensor.abs().max()),
                                   msg=f"weight {name}")


def test_a_stop_request_stops_every_rank_at_one_step(tmp_path, text_file, make_hooks):
    stopped = api.train("gpt", PARAMS, text_file, tmp_path, make_hooks(stop_at=3, reason="preempt"), world=2)
    assert (stopped.stopped, stopped.step) == ("preempt", 3)
    assert checkpoint.load_latest(tmp_path).step == 3
    assert not multiprocessing.active_children()
    resumed = make_hooks()
    assert api.train("gpt", PARAMS, text_file, tmp_path, resumed, world=2).step == 20
    assert "resumed from the checkpoint at step 3" in resumed.lines


def test_a_lost_rank_ends_the_run(tmp_path, text_file, make_hooks):
    class KillsRank1(type(make_hooks())):
        def stop_requested(self):
            self.asked += 1
            if self.asked == 5:  # before step 4: rank 1 dies as an OOM kill would end it
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGKILL)
            return None

    with pytest.raises(RankLost):
        api.train("gpt", PARAMS, text_file, tmp_path, KillsRank1(), world=2)
    assert not multiprocessing.active_children()
    assert checkpoint.load_latest(tmp_path) is None or checkpoint.load_latest(tmp_path).step < 20


def test_ranks_start_from_a_process_whose_threads_already_ran(tmp_path, text_file, make_hooks):
    """A worker process has run jobs before a gang job comes: forked ranks inherited its OpenMP pool, whose
    threads a fork does not copy, and hung at their first parallel kernel."""
    torch.set_num_threads(2)
    torch.nn.functional.layer_norm(torch.randn(64, 4096), (4096,))  # the pool's threads are started
    result = api.train("gpt", PARAMS, text_file, tmp_path, make_hooks(), world=2)
    assert result.step == 20 and not multiprocessing.active_children()
