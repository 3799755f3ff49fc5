"""Checkpoints written by genq 0.1 (before the model specs and the shared recipe skeleton) keep working:
each model kind resumes training from one and generates from it. tests/data/checkpoints-0.1 holds, per
kind, the step-2 checkpoint of a 4-step job on a built-in dataset, written by that version's code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from genq.core import api, checkpoint
from genq.core.models.vae import recipe as vae_recipe

OLD = Path(__file__).parent.parent / "data" / "checkpoints-0.1"
DATA = {"gpt": ("text", "pydoc"), "gru": ("text", "pydoc"), "dcgan": ("images", "digits"),
        "vae": ("images", "digits"), "wavenet": ("audio", "tones")}
# The params those jobs were submitted with (also in each checkpoint's state["params"]).
PARAMS = {
    "gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "eval_interval": 2, "eval_iters": 1},
    "gru": {"n_embd": 8, "hidden_size": 16, "block_size": 16, "eval_interval": 2, "eval_iters": 1},
    "dcgan": {"conditional": "class", "z_dim": 8, "base_channels": 4, "image_size": 8, "eval_interval": 4},
    "vae": {"z_dim": 4, "base_channels": 4, "image_size": 8, "eval_interval": 4},
    "wavenet": {"n_layers": 2, "residual_channels": 4, "segment_length": 64, "conditional": True,
                "eval_interval": 4, "batch_size": 2},
}


pytestmark = pytest.mark.usefixtures("quick_evaluation")


@pytest.mark.parametrize("model", list(DATA))
def test_a_0_1_checkpoint_resumes_and_generates(model, tmp_path, make_hooks):
    workdir = tmp_path / model
    shutil.copytree(OLD / model, workdir)
    old = checkpoint.load_latest(workdir, model)
    assert old.step == 2
    kind, builtin = DATA[model]
    params = {**old.state["params"], "max_steps": 4, "checkpoint_interval": 2}
    assert {k: params[k] for k in PARAMS[model]} == PARAMS[model]
    hooks = make_hooks()
    result = api.train(model, params, api.DataSource(kind=kind, builtin=builtin), workdir, hooks)
    assert result.step == 4 and result.stopped is None
    assert "resumed from the checkpoint at step 2" in hooks.lines
    assert [step for step, _ in hooks.checkpoints] == [4]  # steps 3 and 4 ran, not 1 and 2 again
    samples = api.generate(workdir, [None], {"num_samples": 1, "seed": 1, "max_new_tokens": 5, "seconds": 0.01},
                           tmp_path / "out", make_hooks())
    assert len(samples) >= 1


def test_a_checkpoint_the_recipe_cannot_resume_is_refused_by_name(tmp_path, make_hooks):
    # A recipe whose optimizers changed name cannot take this state: say so instead of a KeyError.
    workdir = tmp_path / "vae"
    shutil.copytree(OLD / "vae", workdir)
    old = checkpoint.load_latest(workdir, "vae")
    net = vae_recipe.VAE(vae_recipe.VAEConfig(**old.config))
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(checkpoint.CheckpointError, match=r"no state for optimizer\(s\) \['opt_renamed'\]"):
        old.restore({"model": net}, {"opt_renamed": opt})
