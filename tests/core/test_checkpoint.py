"""Checkpoints: round trips, pruning, fallbacks, writers killed mid-save, and crafted state files refused."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import time

import pytest
import torch
from torch import nn

from genq.core import checkpoint
from genq.core.models.gpt.net import GPT, GPTConfig


def net() -> GPT:
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16))


def state(**kw):
    config = {"vocab_size": 13, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16}
    return {"kind": "gpt", "config": config, **kw}


def test_a_snapshot_holds_the_step_it_was_taken_at_while_training_goes_on(tmp_path):
    torch.manual_seed(0)
    a = net()
    opt = a.optimizer(1e-3, 0.1)
    x = torch.randint(0, 13, (2, 8))

    def train_step():
        opt.zero_grad()
        a(x, x)[1].backward()
        opt.step()

    train_step()
    weights = {k: v.clone() for k, v in a.state_dict().items()}
    moments = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    snap = checkpoint.snapshot(1, {"model": a}, state(optimizer=opt.state_dict(), rng=checkpoint.rng_state()))
    train_step()  # in place: the weights and AdamW's moments move on
    assert not torch.equal(a.state_dict()["lm_head.weight"], weights["lm_head.weight"])
    loaded = checkpoint.load(checkpoint.write(tmp_path, snap))
    assert loaded.step == 1
    assert all(torch.equal(loaded.tensors["model"][k], v) for k, v in weights.items())
    assert all(torch.equal(loaded.state["optimizer"]["state"][0][k], v) for k, v in moments.items())


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    a = net()
    opt = a.optimizer(1e-3, 0.1)
    x = torch.randint(0, 13, (2, 8))
    a(x, x)[1].backward()
    opt.step()
    path = checkpoint.save(tmp_path, 7, {"model": a},
                           state(optimizer=opt.state_dict(), rng=checkpoint.rng_state()))
    expected_draw = torch.rand(3)

    torch.manual_seed(123)
    ck = checkpoint.load_latest(tmp_path)
    assert (ck.path, ck.step, ck.kind) == (path, 7, "gpt")
    b = GPT(GPTConfig(**ck.config))
    ck.load_into({"model": b})
    assert b.lm_head.weight is b.wte.weight  # tying survives the deduplicated save
    assert torch.equal(a(x)[0], b(x)[0])
    opt_b = b.optimizer(1e-3, 0.1)
    opt_b.load_state_dict(ck.state["optimizer"])
    assert torch.equal(opt_b.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    checkpoint.set_rng_state(ck.state["rng"])
    assert torch.equal(torch.rand(3), expected_draw)
    assert checkpoint.load_model_kind(tmp_path) == "gpt"
    # what state.pt holds is readable without unpickling arbitrary objects
    assert torch.load(path / checkpoint.STATE, weights_only=True)["step"] == 7


def test_keeps_the_two_newest_and_points_latest_at_the_newest(tmp_path):
    m = nn.Linear(2, 2)
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, {"model": m}, state())
    root = checkpoint.checkpoint_dir(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "step-00000030", "step-00000040"]
    assert (root / "LATEST").read_text().strip() == "step-00000040"
    assert checkpoint.latest_step(tmp_path) == 40


def test_falls_back_when_the_newest_is_damaged(tmp_path):
    m = nn.Linear(2, 2)
    checkpoint.save(tmp_path, 1, {"model": m}, state())
    newest = checkpoint.save(tmp_path, 2, {"model": m}, state())
    data = (newest / checkpoint.WEIGHTS).read_bytes()
    (newest / checkpoint.WEIGHTS).write_bytes(data[: len(data) // 2])
    assert checkpoint.load_latest(tmp_path).step == 1
    (checkpoint.checkpoint_dir(tmp_path) / "LATEST").write_text("step-00000099\n")  # names a missing folder
    assert checkpoint.load_latest(tmp_path).step == 1


def test_partial_step_folders_are_ignored(tmp_path):
    m = nn.Linear(2, 2)
    checkpoint.save(tmp_path, 5, {"model": m}, state())
    root = checkpoint.checkpoint_dir(tmp_path)
    (root / ".tmp-deadhost-1-abcd").mkdir()  # a writer killed before its rename
    (root / "step-00000009").mkdir()  # a folder that never got its files
    assert checkpoint.load_latest(tmp_path).step == 5
    assert checkpoint.load_model_kind(tmp_path) == "gpt"


def test_no_checkpoint_and_bad_state(tmp_path):
    assert checkpoint.load_latest(tmp_path) is None
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load_model_kind(tmp_path)
    with pytest.raises(TypeError, match=r"state\['extra'\]\['when'\] is a object"):
        checkpoint.save(tmp_path, 1, {"model": nn.Linear(2, 2)}, state(extra={"when": object()}))
    with pytest.raises(ValueError, match="kind"):
        checkpoint.save(tmp_path, 1, {"model": nn.Linear(2, 2)}, {})


def test_writers_killed_mid_save_never_leave_an_unloadable_checkpoint(tmp_path):
    model = nn.Linear(256, 256)  # big enough that a save takes a moment to write
    checkpoint.save(tmp_path, 0, {"model": model}, state())
    rnd = random.Random(0)
    last = 0
    for _ in range(8):
        pid = os.fork()
        if pid == 0:  # the writer: saves as fast as it can until killed
            try:
                step = last + 1
                while True:
                    checkpoint.save(tmp_path, step, {"model": model}, state(rng=checkpoint.rng_state()))
                    step += 1
            finally:
                os._exit(1)
        time.sleep(rnd.uniform(0.02, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ck = checkpoint.load(checkpoint.checkpoint_dir(tmp_path) / (checkpoint.checkpoint_dir(tmp_path)
                                                                     / "LATEST").read_text().strip())
        assert ck.step >= last
        assert checkpoint.load_latest(tmp_path).step == ck.step
        last = ck.step
    assert last > 8
    leftovers = [p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".")]
    checkpoint.save(tmp_path, last + 1, {"model": model}, state())  # a save cleans up after killed writers
    assert not [p for p in checkpoint.checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".")], leftovers


def test_saving_a_step_again_replaces_a_damaged_folder(tmp_path):
    m = nn.Linear(2, 2)
    path = checkpoint.save(tmp_path, 3, {"model": m}, state())
    (path / checkpoint.STATE).write_bytes(b"garbage")
    checkpoint.save(tmp_path, 3, {"model": m}, state())
    assert checkpoint.load_latest(tmp_path).step == 3
    assert checkpoint.load(path).step == 3


class RunsCode:
    """Unpickling this calls exec(), which writes `marker`: what a crafted state.pt would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_state_file_that_would_run_code_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "ran"
    checkpoint.save(tmp_path, 1, {"model": nn.Linear(2, 2)}, state())
    path = checkpoint.save(tmp_path, 2, {"model": nn.Linear(2, 2)}, state())
    # meta.json and the weights stay valid, and the payload agrees with meta.json: only the unpickler stands
    # in the way
    payload = {**state(), "step": 2, "evil": RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path / checkpoint.STATE)
    else:  # protocol 2: the one torch's legacy format uses, so the refusal is about the global, not an opcode
        (path / checkpoint.STATE).write_bytes(pickle.dumps(payload, protocol=2))

    # the file is live: an unrestricted load runs its code
    try:
        torch.load(path / checkpoint.STATE, weights_only=False)
    except RuntimeError:
        pass  # the legacy reader runs the code before it finds no magic number
    assert marker.read_text() == "ran"
    marker.unlink()

    refusal = (r"step-00000002: state.pt refused: it may hold only tensors and plain values "
               r"\(Unsupported global: GLOBAL exec was not an allowed global by default\)")
    with pytest.raises(checkpoint.CheckpointError, match=refusal):
        checkpoint.load(path)
    # with an older good checkpoint the crafted one is skipped; with none, loading names it and the refusal
    assert checkpoint.load_latest(tmp_path, "gpt").step == 1
    shutil.rmtree(checkpoint.checkpoint_dir(tmp_path) / "step-00000001")
    for load in (checkpoint.load_latest, checkpoint.load_trained):
        with pytest.raises(checkpoint.CheckpointError, match=refusal):
            load(tmp_path, "gpt")
    assert not marker.exists()
