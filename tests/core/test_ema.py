"""The weights' moving average a gpt job shows: its update and swap, and a job whose evaluations and checkpoints
show it while training goes on, and resumes, from the trained weights."""

from __future__ import annotations

import torch
from torch import nn

from genq.core import api, checkpoint, ema
from genq.core.data.text import TextData, load_text, tokenizer_from_state
from genq.core.eval.text import eval_rows, val_loss
from genq.core.models.gpt.recipe import GPTRecipe
from tests.core.conftest import TINY_GPT as GPT


def test_the_average_follows_the_weights_and_swaps_in_and_out():
    first, shared = nn.Linear(4, 3), nn.Linear(4, 3)
    shared.weight = first.weight  # tied: averaged once
    params = ema.weights([first, shared])
    assert len(params) == 3
    average = ema.WeightAverage(params, decay=0.9)
    expected = [p.clone() for p in params]
    for step in range(3 * ema.EVERY):
        with torch.no_grad():
            for p in (first.weight, first.bias, shared.bias):
                p.add_(torch.randn_like(p))
        average.update(step)
        if (step + 1) % ema.EVERY == 0:  # the weights of every EVERY-th step, at decay**EVERY
            expected = [0.9**ema.EVERY * e + (1 - 0.9**ema.EVERY) * p for e, p in zip(expected, params, strict=True)]
    assert all(torch.allclose(a, e) for a, e in zip(average.average, expected, strict=True))
    weights, averaged = [p.clone() for p in params], [a.clone() for a in average.average]
    with average.swapped_in() as trained:
        assert torch.equal(first.weight, averaged[0]) and torch.equal(shared.weight, first.weight)
        assert all(torch.equal(t, w) for t, w in zip(trained, weights, strict=True))
    assert all(torch.equal(p, w) for p, w in zip(params, weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(average.average, averaged, strict=True))


def _val_loss(workdir, text_file, tensors) -> float:
    """The job's evaluation (its eval_iters batches) of the network in `workdir`'s checkpoint holding `tensors`."""
    ckpt = checkpoint.load_latest(workdir, "gpt")
    net = GPTRecipe.network(ckpt.config)
    net.load_state_dict(tensors)
    tok = tokenizer_from_state(ckpt.state["tokenizer"])
    data = TextData(tok.encode_corpus(load_text(text_file)), GPT["block_size"], GPT["batch_size"], 1337, "cpu")
    return val_loss(net, data.val_batches(GPT["eval_iters"], eval_rows(8, 16, tok.vocab_size)))["val/loss"]


def test_a_job_evaluates_and_saves_the_average_and_trains_the_weights(text_file, tmp_path, make_hooks):
    averaged, plain = make_hooks(), make_hooks()
    api.train("gpt", GPT, text_file, tmp_path / "a", averaged)
    api.train("gpt", {**GPT, "ema_decay": 0.0}, text_file, tmp_path / "b", plain)
    # training is the same; what is evaluated differs
    assert averaged.series["train/loss"] == plain.series["train/loss"]
    assert averaged.series["val/loss"] != plain.series["val/loss"]
    saved, unaveraged = (checkpoint.load_latest(tmp_path / n, "gpt") for n in ("a", "b"))
    assert ema.STATE_KEY not in unaveraged.state
    # the averaging job's checkpoint: its model (what a generation job loads) is the average, with the val/loss
    # of its last evaluation; its state holds the trained weights, the other job's model
    model, plain_model = saved.tensors["model"], unaveraged.tensors["model"]
    assert abs(_val_loss(tmp_path / "a", text_file, model) - averaged.series["val/loss"][-1][1]) < 1e-4
    assert abs(_val_loss(tmp_path / "a", text_file, plain_model) - plain.series["val/loss"][-1][1]) < 1e-4
    names = [name for name, _ in GPTRecipe.network(saved.config).named_parameters()]  # tied ones once
    trained = dict(zip(names, saved.state[ema.STATE_KEY], strict=True))
    assert all(torch.equal(t, plain_model[name]) for name, t in trained.items())
    assert not all(torch.equal(model[name], t) for name, t in trained.items())


def test_a_resumed_job_trains_on_from_the_trained_weights_averaging_or_not(text_file, tmp_path, make_hooks):
    straight = make_hooks()
    api.train("gpt", GPT, text_file, tmp_path / "a", straight)
    api.train("gpt", GPT, text_file, tmp_path / "b", make_hooks(stop_at=25))
    assert ema.STATE_KEY in checkpoint.load_latest(tmp_path / "b", "gpt").state
    again = make_hooks()
    api.train("gpt", {**GPT, "ema_decay": 0.0}, text_file, tmp_path / "b", again)
    # the loss of the steps after 25 is the uninterrupted run's: the trained weights went on, not their average
    assert again.series["train/loss"][1:] == straight.series["train/loss"][3:]
    assert ema.STATE_KEY not in checkpoint.load_latest(tmp_path / "b", "gpt").state
