"""The gpt and gru recipes through core.api: training, cancel and resume, generation."""

from __future__ import annotations

import pytest
import torch

from genq.core import api, checkpoint
from genq.core.data.text import TextData, load_text, tokenizer_from_state
from genq.core.errors import ParamError
from genq.core.models.gpt import recipe as gpt
from tests.core.conftest import TINY_GPT as GPT

GRU = {"n_embd": 16, "hidden_size": 48, "block_size": 16, "batch_size": 8, "lr": 1e-2, "max_steps": 60,
       "eval_interval": 30, "eval_iters": 2, "checkpoint_interval": 1000}


def losses(hooks, name="train/loss"):
    return [v for _, v in hooks.series[name]]


@pytest.mark.parametrize("model,params", [("gpt", GPT), ("gru", GRU)])
def test_train_learns_and_reports(model, params, text_file, tmp_path, make_hooks):
    hooks = make_hooks()
    result = api.train(model, params, text_file, tmp_path / "job", hooks)
    curve = losses(hooks)
    assert result.step == 60 and result.stopped is None
    assert curve[-1] < 0.75 * curve[0]
    assert set(result.metrics) == {"val/loss", "val/perplexity", "eval/distinct_1", "eval/distinct_2",
                                   "eval/repetition_rate"}
    assert [s for s, _ in hooks.series["val/loss"]] == [30, 60]
    assert hooks.series["throughput/tokens_per_s"][0][1] > 0
    assert len(result.samples) == 3 and all(s.kind == "text" and s.text for s in result.samples)
    assert [s for s, _ in hooks.checkpoints] == [60]
    assert checkpoint.load_model_kind(tmp_path / "job") == model


def test_cancel_then_resume_continues_the_same_curve(text_file, tmp_path, make_hooks):
    straight = make_hooks()
    api.train("gpt", GPT, text_file, tmp_path / "a", straight)

    first = make_hooks(stop_at=25)
    stopped = api.train("gpt", GPT, text_file, tmp_path / "b", first)
    assert (stopped.step, stopped.stopped, stopped.samples) == (25, "cancel", [])
    assert [s for s, _ in first.checkpoints] == [25]
    second = make_hooks()
    resumed = api.train("gpt", GPT, text_file, tmp_path / "b", second)
    assert resumed.step == 60 and any("resumed" in line for line in second.lines)
    assert second.series["train/loss"][0][0] == 30  # the 25..30 interval is logged after resuming
    # after the resumed interval, the loss curve is the uninterrupted one exactly
    assert second.series["train/loss"][1:] == straight.series["train/loss"][3:]
    assert second.series["val/loss"] == straight.series["val/loss"]


def test_generate_seeds_prompts_and_stop(text_file, tmp_path, make_hooks):
    job = tmp_path / "job"
    api.train("gpt", {**GPT, "max_steps": 20}, text_file, job, make_hooks())
    params = {"num_samples": 2, "max_new_tokens": 30, "seed": 7, "top_k": 5, "top_p": 0.9, "temperature": 0.8}
    hooks = make_hooks()
    out = api.generate(job, [None, "All:"], params, tmp_path / "out", hooks)
    assert [s.prompt for s in out] == [None, None, "All:", "All:"]
    assert all(s.kind == "text" for s in out)
    assert out[2].text.startswith("All:") and len(out[2].text) == 4 + 30
    assert hooks.progress_calls[-1] == (2, 2)
    again = api.generate(job, [None, "All:"], params, tmp_path / "out", make_hooks())
    assert [s.text for s in again] == [s.text for s in out]

    with pytest.raises(api.DataError, match="'@'"):
        api.generate(job, ["@home"], params, tmp_path / "out", make_hooks())
    stopped = api.generate(job, ["All:", "All:", "All:"], params, tmp_path / "out", make_hooks(stop_at=1))
    assert len(stopped) == 2  # the first prompt's samples, then the stop


@pytest.mark.parametrize("tokenizer", ["word", "bpe"])
def test_other_tokenizers_train_and_generate(tokenizer, text_file, tmp_path, make_hooks):
    params = {**GRU, "tokenizer": tokenizer, "max_steps": 10, "eval_interval": 10, "block_size": 8,
              "vocab_size": 300}
    api.train("gru", params, text_file, tmp_path / "job", make_hooks())
    out = api.generate(tmp_path / "job", ["speak, zebra"], {"max_new_tokens": 5, "seed": 1}, tmp_path / "o",
                       make_hooks())
    assert out[0].text.startswith("speak, <UNK>" if tokenizer == "word" else "speak, zebra")


def test_bad_data_and_params_are_clear_errors(text_file, tmp_path, make_hooks):
    with pytest.raises(api.DataError, match="trains on text"):
        images = api.DataSource(kind="images", path=text_file.path)
        api.train("gpt", GPT, images, tmp_path / "j", make_hooks())
    with pytest.raises(api.DataError, match="too short for block_size=4096"):
        api.train("gpt", {**GPT, "block_size": 4096}, text_file, tmp_path / "j", make_hooks())
    with pytest.raises(ParamError, match="n_layers"):
        api.train("gpt", {"n_layers": 2}, text_file, tmp_path / "j", make_hooks())
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        api.generate(tmp_path / "nothing", [None], {}, tmp_path / "o", make_hooks())


def test_the_final_val_loss_reads_the_eval_iters_batches_every_evaluation_reads(text_file, tmp_path, make_hooks):
    params = {**GPT, "max_steps": 20, "eval_interval": 10, "eval_iters": 3, "seed": 5}
    result = api.train("gpt", params, text_file, tmp_path / "j", make_hooks())
    ckpt = checkpoint.load_latest(tmp_path / "j")
    net = gpt.GPTRecipe.network(ckpt.config).eval()
    ckpt.load_into({"model": net})
    ids = tokenizer_from_state(ckpt.state["tokenizer"]).encode(load_text(text_file))
    data = TextData(ids, params["block_size"], params["batch_size"], params["seed"])
    batches = list(data.val_batches(3))
    assert len(batches) == 3 and batches[0][0].shape == (8, 16)
    # nanoGPT's estimate: the mean loss of eval_iters batches, the same ones every time (in the job's precision)
    with torch.no_grad(), gpt.GPTRecipe.amp("cpu", ckpt.config["n_embd"]):
        expected = torch.stack([net(x, y)[1] for x, y in batches]).mean().item()
    assert abs(result.metrics["val/loss"] - expected) < 1e-5


def test_gpt_checkpoint_of_the_learned_position_network_is_a_clear_error():
    old = {"vocab_size": 11, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0,
           "bias": False}  # what checkpoints held before rotary positions
    with pytest.raises(checkpoint.CheckpointError, match="learned positions"):
        gpt.GPTRecipe.network(old)


def test_gpt_head_size_must_be_even(text_file, tmp_path, make_hooks):
    with pytest.raises(ParamError, match="head size"):
        api.train("gpt", {**GPT, "n_embd": 30, "n_head": 2}, text_file, tmp_path / "j", make_hooks())
