"""A job stopped at a checkpoint and resumed ends with exactly the weights of an uninterrupted run: what the
worker relies on when it re-queues a job at shutdown or after a lost worker."""

from __future__ import annotations

import pytest
import torch

from genq.core import api, checkpoint

RUNS = {
    "vae": ("images", "digits", {"z_dim": 4, "base_channels": 4, "image_size": 8, "batch_size": 8}),
    "dcgan": ("images", "digits", {"conditional": "class", "z_dim": 8, "base_channels": 4, "image_size": 8,
                                   "batch_size": 8}),
    "wavenet": ("audio", "tones", {"n_layers": 2, "residual_channels": 4, "segment_length": 64, "batch_size": 2}),
    "gpt": ("text", "pydoc", {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
                              "dropout": 0.1, "eval_iters": 1}),
}


pytestmark = pytest.mark.usefixtures("quick_evaluation")


@pytest.mark.parametrize("model", list(RUNS))
def test_stopped_and_resumed_equals_uninterrupted(model, tmp_path, make_hooks):
    kind, builtin, params = RUNS[model]
    params = {**params, "max_steps": 6, "eval_interval": 3, "checkpoint_interval": 3}
    data = api.DataSource(kind=kind, builtin=builtin)
    api.train(model, params, data, tmp_path / "straight", make_hooks())
    stopped = api.train(model, params, data, tmp_path / "resumed", make_hooks(stop_at=3, reason="shutdown"))
    assert stopped.stopped == "shutdown" and stopped.step == 3
    api.train(model, params, data, tmp_path / "resumed", make_hooks())
    straight, resumed = (checkpoint.load_latest(tmp_path / name).tensors for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    for module in straight:
        for name, tensor in straight[module].items():
            assert torch.equal(tensor, resumed[module][name]), f"{module}.{name} differs after resuming"
