"""gpt's `compile` param: the training step runs through torch.compile (inductor, here on the CPU), learns as
the eager model does, and its checkpoints hold the plain module's weights."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors import safe_open

from genq.core import api, checkpoint
from genq.core.models.gpt.net import GPT, GPTConfig

PARAMS = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 8, "lr": 3e-3,
          "max_steps": 30, "eval_interval": 30, "eval_iters": 2, "checkpoint_interval": 1000, "warmup_steps": 5}


@pytest.fixture(scope="module")
def inductor():
    """Skip when inductor cannot build a kernel here (no C++ compiler, say): that is the toolchain, not genq."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as exc:  # noqa: BLE001 - whatever the toolchain raises, the reason is in its message
        pytest.skip(f"torch.compile's inductor cannot build CPU kernels here: {type(exc).__name__}: {exc}")


@pytest.mark.slow  # compiling the model's forward and backward takes about a minute on two cores
def test_a_compiled_gpt_trains_like_the_eager_one_and_saves_plain_weights(inductor, text_file, tmp_path,
                                                                         make_hooks):
    eager, compiled = make_hooks(), make_hooks()
    api.train("gpt", PARAMS, text_file, tmp_path / "eager", eager)
    result = api.train("gpt", {**PARAMS, "compile": True}, text_file, tmp_path / "compiled", compiled)
    assert result.step == 30 and any("torch.compile" in line for line in compiled.lines)

    # the same seed, data and updates: the same curve, up to the compiled kernels' float rounding
    a, b = eager.series["train/loss"], compiled.series["train/loss"]
    assert [s for s, _ in a] == [s for s, _ in b] == [10, 20, 30]
    assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-3)
    assert b[-1][1] < 0.9 * b[0][1]
    assert compiled.series["val/loss"][-1][1] == pytest.approx(eager.series["val/loss"][-1][1], rel=1e-3)

    weights = checkpoint.checkpoint_dir(tmp_path / "compiled") / "step-00000030" / checkpoint.WEIGHTS
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert "model.wte.weight" in keys and not [k for k in keys if "_orig_mod" in k]
    ckpt = checkpoint.load_trained(tmp_path / "compiled", "gpt")
    net = GPT(GPTConfig(**ckpt.config))
    ckpt.load_into({"model": net})  # strict: every key of the plain module, nothing else
    out = api.generate(tmp_path / "compiled", ["First"], {"num_samples": 1, "max_new_tokens": 8, "seed": 1},
                       tmp_path / "out", make_hooks())
    assert out[0].text.startswith("First")


def test_rotary_positions_compile_without_a_graph_break_and_match_eager(inductor):
    # eager turns the pairs with one complex product; compiled, with real arithmetic (inductor has no complex)
    from genq.core.models.gpt.net import rotate

    net = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    rope = net._rope(3, 8, torch.device("cpu"))  # (T, 1, hs/2, 2)
    x = torch.randn(2, 8, 4, 8)
    compiled = torch.compile(rotate, fullgraph=True)  # fullgraph: a graph break is an error
    assert torch.allclose(compiled(x, rope), rotate(x, rope), atol=1e-6)
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = rope.unbind(-1)
    by_hand = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    assert torch.allclose(rotate(x, rope), by_hand, atol=1e-6)


def test_causal_attention_compiles_without_a_warning_and_matches_eager(inductor):
    # dynamo warns (into a compiled job's log) where it traces through functools.cache: the causal bias's
    from genq.core.models.gpt.attention import cpu_causal_attention

    q, k, v = (torch.randn(2, 2, 8, 4) for _ in range(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(cpu_causal_attention, fullgraph=True)(q, k, v, 0.0, torch.float32)
    assert [str(w.message) for w in caught] == []
    assert torch.allclose(out, cpu_causal_attention(q, k, v, 0.0, torch.float32), atol=1e-5)
